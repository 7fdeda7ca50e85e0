#!/bin/sh
# with-build-cas COMMAND [ARG...]: run one command of a docker/Dockerfile RUN step (pip, a weights download),
# trusting the build host's extra CAs too. Installed as /usr/local/bin/with-build-cas in every image.
#
# BUILD_CA_CERTS (a build arg, in the environment of the RUN step): base64 of the host's extra CA PEMs (a
# TLS-intercepting proxy's: the Makefile reads /usr/local/share/ca-certificates/*.crt). Empty (everyone else): COMMAND
# runs as it is. Set: COMMAND runs with PIP_CERT, SSL_CERT_FILE and REQUESTS_CA_BUNDLE pointing at a temporary
# bundle, Debian's /etc/ssl/certs/ca-certificates.crt plus those PEMs, removed when COMMAND ends, within the same RUN
# step, so no layer keeps it. The image's own ENV (the local base sets PIP_CERT and SSL_CERT_FILE to Debian's bundle)
# is overridden for COMMAND only. Its exit status is COMMAND's.
set -eu

if [ -z "${BUILD_CA_CERTS:-}" ]; then
    exec "$@"
fi

extra=$(printf '%s' "$BUILD_CA_CERTS" | base64 -d 2>/dev/null) || extra=
case "$extra" in
    *"-----BEGIN CERTIFICATE-----"*) ;;
    *) echo "with-build-cas: BUILD_CA_CERTS is not base64 of PEM certificates" >&2; exit 2 ;;
esac
bundle=$(mktemp /tmp/build-cas.XXXXXX)
trap 'rm -f "$bundle"' EXIT
trap 'exit 130' INT TERM HUP
{
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then cat /etc/ssl/certs/ca-certificates.crt; echo; fi
    printf '%s\n' "$extra"
} >"$bundle"

status=0
PIP_CERT=$bundle SSL_CERT_FILE=$bundle REQUESTS_CA_BUNDLE=$bundle "$@" || status=$?
exit "$status"
