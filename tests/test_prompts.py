"""Prompt sets: the shipped PartiPrompts and GenEval files, user files, selection by
category and count, provenance records, one-line errors, and `migm-bench prompts`."""

from __future__ import annotations

import pytest

from bench.cli import main
from metrics import plugin as t2i_plugin
from metrics.prompts import DATA_DIR, PromptSpecError, categories, load_prompts, prompts_hash


def test_shipped_sets_have_their_published_sizes_and_licences():
    parti, geneval = load_prompts("parti"), load_prompts("geneval")
    assert len(parti) == 1632 and len(geneval) == 553
    assert parti.total == 1632 and geneval.total == 553
    assert len(categories("parti")) == 12 and len(categories("parti", "challenge")) == 11
    assert categories("geneval") == {"single_object": 80, "two_object": 99, "counting": 80, "colors": 94,
                                     "position": 100, "color_attr": 100}  # fmt: skip
    # read verbatim: the prompt that starts with a quoted word keeps its quotes (a CSV reader drops them)
    assert any(p.startswith('"G I G G L E"') for p in parti.prompts)
    assert geneval.prompts[0] == "a photo of a bench"
    assert "Apache License" in (DATA_DIR / "parti" / "LICENSE").read_text()
    assert "MIT License" in (DATA_DIR / "geneval" / "LICENSE").read_text()
    notice = (DATA_DIR / "NOTICE.md").read_text()
    assert "google-research/parti" in notice and "djghosh13/geneval" in notice


def test_category_filter_limit_and_case():
    animals = load_prompts("parti:category=Animals")
    assert len(animals) == categories("parti")["Animals"] == 314
    assert {item.label("category") for item in animals.items} == {"Animals"}
    first = load_prompts("parti:category=animals,limit=200")  # case-insensitive
    assert len(first) == 200 and first.prompts == animals.prompts[:200]
    two = load_prompts("parti:category=Animals/Vehicles")
    assert len(two) == 314 + 104
    both_axes = load_prompts("parti:category=Animals,challenge=Basic")
    assert 0 < len(both_axes) < 314 and {i.label("challenge") for i in both_axes.items} == {"Basic"}
    assert len(load_prompts("geneval:category=counting,limit=5")) == 5


def test_user_file_one_prompt_per_line(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("a red cube\n\n  a blue sphere  \na cat: sitting\n", encoding="utf-8")
    sel = load_prompts(str(path))
    assert sel.prompts == ["a red cube", "a blue sphere", "a cat: sitting"]
    assert load_prompts(f"{path}:limit=2").prompts == ["a red cube", "a blue sphere"]
    rec = sel.record()
    assert rec["source"] == str(path.resolve()) and rec["count"] == 3 and len(rec["source_sha256"]) == 16


def test_record_identifies_the_selection():
    a, b = load_prompts("parti:limit=10"), load_prompts("parti:limit=10")
    assert a.record() == b.record() and a.sha256 == prompts_hash(a.prompts)
    assert load_prompts("parti:limit=11").sha256 != a.sha256
    rec = load_prompts("parti:category=animals,limit=3").record()
    assert rec["filters"] == {"category": ["Animals"]} and rec["limit"] == 3 and rec["of"] == 1632


@pytest.mark.parametrize(
    "spec, message",
    [
        ("partii", "unknown prompt set 'partii'. Did you mean: parti?"),
        ("gen_eval", "Did you mean: geneval?"),
        ("parti:category=Animal", "unknown category 'Animal'. Did you mean: Animals?"),
        ("parti:limt=3", "unknown option 'limt'. Did you mean: limit?"),
        ("geneval:challenge=Basic", "unknown option 'challenge'"),
        ("parti:limit=0", "limit must be >= 1"),
        ("parti:limit=many", "limit must be an integer"),
        ("parti:category", "must look like key=value"),
        ("no/such/prompts.txt", "prompt file not found: no/such/prompts.txt"),
        ("", "empty prompt spec"),
    ],
)
def test_bad_specs_give_one_line_errors(spec, message):
    with pytest.raises(PromptSpecError) as info:
        load_prompts(spec)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bad_user_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(PromptSpecError, match="holds no prompts"):
        load_prompts(str(empty))
    binary = tmp_path / "bad.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(PromptSpecError, match="not UTF-8"):
        load_prompts(str(binary))
    good = tmp_path / "good.txt"
    good.write_text("a prompt\n")
    with pytest.raises(PromptSpecError, match="unknown option 'category'"):  # user files: limit only
        load_prompts(f"{good}:category=x")


def test_prompts_command_lists_the_selection(default_manager, capsys):
    default_manager.register(t2i_plugin)
    assert main(["prompts", "parti:category=Animals,limit=3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# parti:category=Animals,limit=3: 3 of 1632 prompts from parti, sha256 ")
    assert lines[1:] == ["0\tAnimals\ta shiba inu", "1\tAnimals\ta snail", "2\tAnimals\tbrain coral"]

    assert main(["prompts"]) == 0
    out = capsys.readouterr().out
    assert "parti: 1632 prompts" in out and "geneval: 553 prompts" in out and "Animals (314)" in out

    assert main(["prompts", "partii"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "migm-bench: error: unknown prompt set 'partii'. Did you mean: parti? "
        "(or give the path of a prompt file, one per line)"
    )
