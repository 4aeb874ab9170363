"""Refresh-wide options reach every stage, and option mistakes are caught once, before anything runs."""

from __future__ import annotations

import pytest

from pipelines.config import RefreshConfig
from pipelines.errors import UserError, parse_model

SEEDED = ("search", "retrain", "tournament", "canary")


def test_the_refresh_seed_reaches_every_stage():
    """Defect: `nasops refresh --seed 7` trained with seed 0 and tagged versions seed=0."""
    config = RefreshConfig(seed=7)
    assert {name: getattr(config, name).seed for name in SEEDED} == dict.fromkeys(SEEDED, 7)
    # and it survives the trip across a Prefect boundary (plain JSON)
    again = RefreshConfig.model_validate(config.model_dump(mode="json"))
    assert {name: getattr(again, name).seed for name in SEEDED} == dict.fromkeys(SEEDED, 7)


def test_every_refresh_level_option_reaches_its_stages():
    config = RefreshConfig(seed=3, top_k=4, model_name="m")
    assert config.search.top_k == config.retrain.top_k == 4
    assert config.model_name == "m"


def test_a_top_k_given_to_one_stage_is_used_by_both():
    """Defect: `retrain.top_k: 4` in a config file gave retraining only the search's default 2 candidates."""
    config = RefreshConfig.model_validate({"retrain": {"top_k": 4}})
    assert config.search.top_k == config.retrain.top_k == config.top_k == 4
    config = RefreshConfig.model_validate({"search": {"top_k": 3}})
    assert config.search.top_k == config.retrain.top_k == 3


@pytest.mark.parametrize("raw, needle", [
    ({"retrain": {"top_k": 4}, "search": {"top_k": 3}}, "conflicting top_k"),
    ({"seed": 1, "retrain": {"seed": 2}}, "retrain.seed=2 differs from the refresh seed 1"),
    ({"search": {"space": "foo"}}, "unknown search space 'foo'; choose one of: mlp, nb201"),
    ({"search": {"strategy": "bayes"}}, "unknown strategy 'bayes'"),
    ({"search": {"predictor": "xgb"}}, "unknown predictor 'xgb'"),
    ({"search": {"proxies": ["synflow", "nope"]}}, "unknown proxies ['nope']"),
    ({"search": {"ensemble": "best"}}, "unknown ensemble 'best'"),
    ({"canary": {"stepz": [0.1]}}, "unknown key 'canary.stepz'"),
    ({"tournament": {"rate": -1}}, "tournament.rate"),
    ({"search": {"budgett": 3}}, "unknown key 'search.budgett' (valid: space, space_config"),
])
def test_stage_option_mistakes_are_one_line_naming_the_key(raw, needle):
    with pytest.raises(UserError) as info:
        parse_model(RefreshConfig, raw, "refresh configuration")
    message = str(info.value)
    assert needle in message and "\n" not in message
