"""Naming a workload so a fresh interpreter can import it (`describe_workload`), and importing
it there (`load_workload`): by name, from its file when the name does not resolve or resolves
to another module, and one line when it cannot be found."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import workloads

from pytest_llem.errors import WorkloadError
from pytest_llem.isolation.workload import WorkloadSpec, describe_workload, load_workload


class Holder:
    @staticmethod
    def generate(ctx) -> None:
        return None

    def bound(self, ctx) -> None:
        return None


def test_a_module_level_function_is_named_by_module_and_qualname_with_its_file():
    spec = describe_workload(workloads.count_tokens)
    assert spec.ref == "workloads:count_tokens"
    assert Path(spec.module_file) == Path(workloads.__file__)


def test_a_static_method_is_named_by_its_dotted_qualname_and_loads_back():
    spec = describe_workload(Holder.generate)
    assert spec.ref == f"{__name__}:Holder.generate"
    assert load_workload(spec) is Holder.generate


@pytest.mark.parametrize("ref", [":f", "mod:", "mod", ""])
def test_a_reference_string_needs_both_a_module_and_a_function(ref: str):
    with pytest.raises(
        WorkloadError, match=r"must be 'module:function', e\.g\. 'mybench\.workloads:generate'"
    ):
        describe_workload(ref)


def test_a_reference_string_is_taken_as_it_is_without_a_file():
    assert describe_workload("pkg.mod:Cls.fn") == WorkloadSpec(ref="pkg.mod:Cls.fn")


@pytest.mark.parametrize(
    ("workload", "match"),
    [
        (42, "must be a function or a 'module:function' string, not 42"),
        (Holder().bound, "must be a module-level function of an importable module"),
    ],
)
def test_what_a_fresh_interpreter_cannot_import_by_name_is_refused(workload, match: str):
    with pytest.raises(WorkloadError, match=match):
        describe_workload(workload)


def test_a_function_of_the_main_script_is_refused(tmp_path: Path):
    # Run as a script, its module is __main__: another interpreter would import a different one.
    script = tmp_path / "bench.py"
    script.write_text(
        textwrap.dedent(
            """
            from pytest_llem.errors import WorkloadError
            from pytest_llem.isolation.workload import describe_workload

            def work(ctx):
                pass

            try:
                describe_workload(work)
            except WorkloadError as exc:
                print(exc)
            """
        )
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout
    assert out.strip() == (
        "workload 'work' must be a module-level function of an importable module "
        "(or a 'module:function' string)"
    )


def _module(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body))
    return path


def _load_in_fresh_interpreter(spec: WorkloadSpec, cwd: Path, pythonpath: list[Path]) -> dict:
    """What the child does: load the workload by its spec and call it (with no context)."""
    code = (
        "import json, sys; from pytest_llem.isolation.workload import WorkloadSpec, load_workload; "
        "fn = load_workload(WorkloadSpec.model_validate_json(sys.argv[1])); "
        "print(json.dumps({'module': fn.__module__, 'said': fn(None)}))"
    )
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([*map(str, pythonpath), os.environ.get("PYTHONPATH", "")])
    )
    done = subprocess.run(
        [sys.executable, "-c", code, spec.model_dump_json()], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_workload_described_here_is_imported_by_name_in_a_fresh_interpreter(tmp_path: Path):
    _module(tmp_path / "src", "mirror_bench_a", "def work(ctx):\n    return 'by name'\n")
    spec = WorkloadSpec(ref="mirror_bench_a:work")
    assert _load_in_fresh_interpreter(spec, tmp_path, [tmp_path / "src"]) == {
        "module": "mirror_bench_a",
        "said": "by name",
    }


def test_a_module_the_child_cannot_import_by_name_is_imported_from_its_file(tmp_path: Path):
    # pytest imports a test file under a name (rootdir-relative, say) the child's path lacks.
    file = _module(tmp_path / "tests", "mirror_bench_b", "def work(ctx):\n    return 'from file'\n")
    spec = WorkloadSpec(ref="mirror_bench_b:work", module_file=str(file))
    assert _load_in_fresh_interpreter(spec, tmp_path, []) == {"module": "mirror_bench_b", "said": "from file"}


def test_a_module_of_the_same_name_elsewhere_does_not_stand_in_for_the_workloads_file(tmp_path: Path):
    _module(tmp_path / "shadow", "mirror_bench_c", "def work(ctx):\n    return 'shadow'\n")
    file = _module(tmp_path / "tests", "mirror_bench_c", "def work(ctx):\n    return 'the right one'\n")
    spec = WorkloadSpec(ref="mirror_bench_c:work", module_file=str(file))
    assert _load_in_fresh_interpreter(spec, tmp_path, [tmp_path / "shadow"])["said"] == "the right one"


def test_a_module_neither_importable_nor_on_disk_raises_the_import_error(tmp_path: Path):
    spec = WorkloadSpec(ref="mirror_no_such_module:work", module_file=str(tmp_path / "gone.py"))
    with pytest.raises(ModuleNotFoundError, match="mirror_no_such_module"):
        load_workload(spec)


def test_a_missing_function_is_one_line_naming_the_module_and_the_name():
    with pytest.raises(WorkloadError) as caught:
        load_workload(WorkloadSpec(ref="workloads:no_such_function"))
    assert (
        str(caught.value)
        == "workload 'workloads:no_such_function': workloads has no attribute 'no_such_function'"
    )


def test_a_name_that_is_not_callable_is_refused():
    with pytest.raises(WorkloadError, match=r"^workload 'workloads:STUBBORN_CHILD' is not callable$"):
        load_workload(WorkloadSpec(ref="workloads:STUBBORN_CHILD"))
