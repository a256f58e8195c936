"""tools/mutate.py: the mutation list still matches the code, and the tool itself on a tiny fake repo."""
import importlib.util
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "mutate.py"
if not TOOL.is_file():  # a mutant copy made by the tool holds src/ and tests/ only
    pytest.skip("tools/mutate.py is not in this tree", allow_module_level=True)


def load_tool():
    """Import tools/mutate.py by path (tools/ is no package), leaving no __pycache__ there."""
    spec = importlib.util.spec_from_file_location("rnnlab_mutate_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    before, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = before
    return module


mutate = load_tool()

FAKE_MODULE = "def add(a, b):\n    return a + b\n\n\ndef clamp(x):\n    return max(x, 0)\n"
FAKE_TEST = "from fakepkg import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
FAKE_LIST = '''
[[mutation]]
name = "add-subtracts"
file = "src/fakepkg/__init__.py"
find = "return a + b"
replace = "return a - b"
tests = ["tests/test_fake.py"]
why = "a sign slip that test_add sees"

[[mutation]]
name = "clamp-at-one"
file = "src/fakepkg/__init__.py"
find = "max(x, 0)"
replace = "max(x, 1)"
tests = ["tests/test_fake.py::test_add"]
why = "clamp is not tested: this one survives"
'''


def test_default_list_matches_the_code():
    """Every `find` occurs exactly once, names are unique, test paths exist (`mutate.py --check`)."""
    mutations = mutate.load_mutations(mutate.DEFAULT_LIST)
    assert mutations, "tools/mutations.toml lists no mutation"
    assert mutate.check_mutations(mutations, mutate.ROOT) == []


@pytest.fixture
def fake_repo(tmp_path):
    repo = tmp_path / "repo"
    (repo / "src" / "fakepkg").mkdir(parents=True)
    (repo / "src" / "fakepkg" / "__init__.py").write_text(FAKE_MODULE)
    (repo / "tests").mkdir()
    (repo / "tests" / "test_fake.py").write_text(FAKE_TEST)
    (repo / "mutations.toml").write_text(FAKE_LIST)
    return repo


def test_tool_on_a_fake_repo(fake_repo, capsys):
    code = mutate.main(["--list", str(fake_repo / "mutations.toml"), "--root", str(fake_repo), "-j", "2",
                        "--baseline"])
    out, err = capsys.readouterr()
    assert err.startswith("baseline: 1 passed")  # the tests pass on an unmutated copy
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:-1]}
    assert rows["add-subtracts"][0] == "killed"
    assert rows["add-subtracts"][2] == "tests/test_fake.py::test_add"
    assert rows["clamp-at-one"][0] == "SURVIVED"
    assert out.splitlines()[-1] == "1 killed, 1 survived"
    assert code == 1
    assert (fake_repo / "src" / "fakepkg" / "__init__.py").read_text() == FAKE_MODULE  # the real tree untouched


def test_check_reports_each_problem(fake_repo):
    good = mutate.load_mutations(fake_repo / "mutations.toml")
    stale = mutate.Mutation("stale", "src/fakepkg/__init__.py", "return a * b", "x", ["tests/test_nope.py"], "")
    twice = mutate.Mutation("add-subtracts", "src/fakepkg/__init__.py", "def", "fed", ["tests/test_fake.py"], "")
    outside = mutate.Mutation("outside", "../elsewhere.py", "a", "b", ["-k", "add"], "")
    assert mutate.check_mutations(good, fake_repo) == []
    assert mutate.check_mutations(good + [stale, twice, outside], fake_repo) == [
        "mutation 'add-subtracts': the name is used 2 times",
        "mutation 'stale': 'find' occurs 0 times in src/fakepkg/__init__.py, not once",
        "mutation 'stale': no test path tests/test_nope.py",
        "mutation 'add-subtracts': 'find' occurs 2 times in src/fakepkg/__init__.py, not once",
        "mutation 'outside': ../elsewhere.py is outside what is copied "
        "(src, tests, pyproject.toml, conftest.py, pytest.ini, setup.cfg, tox.ini)",
    ]


def test_malformed_entries_are_reported(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[[mutation]]\nname = "x"\nfile = "src/a.py"\nfind = "a"\ntest = ["t.py"]\nwhy = ""\n')
    with pytest.raises(mutate.ListError) as info:
        mutate.load_mutations(path)
    assert info.value.problems == [
        "mutation 'x': missing field 'replace'",
        "mutation 'x': missing field 'tests'",
        "mutation 'x': unknown field 'test'",
    ]


def test_first_failure_reads_ids_with_spaces_and_brackets():
    output = ("ERROR tests/a.py - ImportError\n"
              "FAILED tests/b.py::test_x[RNNSequence[full]] - AssertionError: 1 - 2\n"
              "FAILED tests/c.py::test_y[corrupt checkpoint: eval] - x\n")
    assert mutate.first_failure(output) == "tests/b.py::test_x[RNNSequence[full]]"
    assert mutate.first_failure("ERROR tests/a.py - ImportError\n") == "ERROR tests/a.py"
    assert mutate.first_failure("3 passed in 0.1s\n") == ""
