"""SlackPlanner: batching slack for clearly faster members, under concurrent load only."""
from __future__ import annotations

from shared.gateway.client import MemberAnswer, Outcome
from shared.gateway.slack import SlackPlanner


def _answered(name: str, latency_ms: float, batch_wait_ms: float = 0.0) -> MemberAnswer:
    return MemberAnswer(name, Outcome.OK, latency_ms, 200, {"probas": {}}, batch_wait_ms=batch_wait_ms)


def test_slack_goes_to_clearly_faster_members_only_under_concurrent_load():
    planner = SlackPlanner(share=0.5, max_slack_ms=5000)
    for answer in (_answered("ocr_nb", 800), _answered("clip_svm", 150), _answered("clip_logreg", 500)):
        planner.observe(answer)
    assert planner.plan(concurrent=1) == {}, "a lone request would only wait"
    assert planner.plan(concurrent=4) == {"clip_svm": 400.0}  # clip_logreg is not twice as fast as ocr_nb
    assert SlackPlanner(share=0.0, max_slack_ms=5000).plan(concurrent=4) == {}


def test_slack_ignores_time_spent_held_and_is_capped():
    planner = SlackPlanner(share=0.5, max_slack_ms=300)
    planner.observe(_answered("ocr_nb", 2000))
    planner.observe(_answered("clip_svm", 1100, batch_wait_ms=1000))  # held 1 s of its 1.1 s: fast, not slow
    assert planner.plan(concurrent=2) == {"clip_svm": 300.0}


def test_a_failing_member_sets_nobodys_slack_until_it_answers_again():
    planner = SlackPlanner(share=0.5, max_slack_ms=5000)
    for answer in (_answered("ocr_nb", 900), _answered("clip_svm", 100), _answered("clip_logreg", 100)):
        planner.observe(answer)
    planner.observe(MemberAnswer("ocr_nb", Outcome.REJECTED, 5.0, 400))  # bad input: no news
    assert planner.plan(concurrent=2) == {"clip_svm": 450.0, "clip_logreg": 450.0}
    planner.observe(MemberAnswer("ocr_nb", Outcome.CONNECTION_ERROR, 1.0, error="refused"))
    assert planner.plan(concurrent=2) == {}, "without ocr_nb the CLIP members are the slowest themselves"
    planner.observe(_answered("ocr_nb", 900))
    assert planner.plan(concurrent=2) == {"clip_svm": 450.0, "clip_logreg": 450.0}
