import json

import pytest

from unipet.errors import ConfigError, UnknownTaskError
from unipet.tasks import PROMPT_TEMPLATE, Task, TaskSet, shipped_task_sets


def test_default_task_set_has_the_four_phantom_cancers():
    ts = TaskSet.load()
    assert ts.names == ["lung_cancer", "lymphoma", "melanoma", "breast_cancer"]
    assert ts.index("LYMPHOMA") == 1 and ts.resolve("breast") == "breast_cancer"
    assert all(p.startswith("This is a") for p in ts.prompts())


def test_unknown_task_message_lists_known():
    with pytest.raises(UnknownTaskError, match="lung_cancer"):
        TaskSet.load().index("glioma")


def test_loading_variants(tmp_path):
    assert len(TaskSet.load(3)) == 3
    assert TaskSet.load(["aorta", "liver"]).descriptions() == ["aorta", "liver"]
    assert {"default", "pet_tumours"} <= set(shipped_task_sets())
    custom = {"name": "x", "tasks": [{"name": "a", "template": {"tumour": "t", "organ": "o", "shape": "s",
                                                                  "edge": "e", "modality": "m"}}]}
    p = tmp_path / "ts.json"
    p.write_text(json.dumps(custom))
    ts = TaskSet.load(p)
    assert ts[0].prompt == PROMPT_TEMPLATE.format(tumour="t", organ="o", shape="s", edge="e", modality="m")
    assert TaskSet.from_dict(ts.to_dict()).to_dict() == ts.to_dict()


def test_bad_task_sets():
    with pytest.raises(ConfigError):
        TaskSet.load("no_such_set")
    with pytest.raises(ConfigError):
        TaskSet([Task("a"), Task("a")])


def test_close_spellings_get_a_did_you_mean_and_spaces_count_as_underscores():
    ts = TaskSet.load()
    assert ts.resolve("lung cancer") == ts.resolve("Lung-Cancer") == "lung_cancer"
    assert "lung cancer" in ts
    with pytest.raises(UnknownTaskError, match="did you mean 'lymphoma'") as err:
        ts.index("lymphona")
    assert "give a task set" not in str(err.value)  # no advice the command cannot follow
    with pytest.raises(UnknownTaskError) as far:
        ts.index("glioma")
    assert "did you mean" not in str(far.value)


def test_an_ambiguous_loose_spelling_is_not_guessed():
    ts = TaskSet.from_dict({"tasks": [{"name": "lung_cancer"}, {"name": "lung-cancer"}]})
    assert ts.resolve("lung_cancer") == "lung_cancer" and ts.resolve("lung-cancer") == "lung-cancer"
    with pytest.raises(UnknownTaskError):
        ts.index("lung cancer")
