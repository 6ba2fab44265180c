"""ops/build_hot finds every C module and the Python twin that checks it."""

from __future__ import annotations

import importlib

from ops import build_hot


def test_every_c_module_is_found_and_has_a_twin_with_a_self_check() -> None:
    found = {str(p.relative_to(build_hot.ROOT)) for p in build_hot.sources()}
    assert {"schemas/hot/_redo.c", "producers/postgresql/_pgoutput.c"} <= found
    for source in build_hot.sources():
        assert callable(importlib.import_module(build_hot.twin(source)).self_check)


def test_the_twin_is_the_module_of_the_same_name_else_the_package() -> None:
    assert build_hot.twin(build_hot.ROOT / "producers/postgresql/_pgoutput.c") == "producers.postgresql.pgoutput"
    assert build_hot.twin(build_hot.ROOT / "schemas/hot/_redo.c") == "schemas.hot"
