// API keys on the page: on a 401, ask for the key once, keep it in sessionStorage, and retry with it.
(function () {
  "use strict";
  const STORE = "classifier-api-key";

  function withKey(options) {
    const key = sessionStorage.getItem(STORE);
    const headers = Object.assign({}, (options && options.headers) || {});
    if (key) headers["Authorization"] = "Bearer " + key;
    return Object.assign({}, options || {}, { headers });
  }

  function askKey(wrong) {
    const key = window.prompt(wrong ? "That API key was refused. API key:" : "This service needs an API key:");
    if (key && key.trim()) sessionStorage.setItem(STORE, key.trim());
    else sessionStorage.removeItem(STORE);
    return Boolean(key && key.trim());
  }

  // fetch() with the stored key; a 401 asks once (per call) for a key and retries.
  window.authFetch = async function (url, options) {
    const response = await fetch(url, withKey(options));
    if (response.status !== 401) return response;
    if (!askKey(Boolean(sessionStorage.getItem(STORE)))) return response;
    return fetch(url, withKey(options));
  };
  window.authHeaders = function () { return withKey({}).headers; };
})();
