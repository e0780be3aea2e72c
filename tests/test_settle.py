"""What a run's imports make is left out of the cycle collector (pipeline/settle.py), in the
`lockstep` command only. Freezing is process state, so each test runs a fresh interpreter."""

from fresh_python import run as _fresh


def test_heavy_imports_in_the_middle_of_a_run_are_frozen():
    out = _fresh("""
        import gc
        from pipeline import jitcache, settle, spacy_load
        settle.one_job()
        settle.now("the imports")
        start = gc.get_freeze_count()
        jitcache.import_umap()
        after_umap = gc.get_freeze_count()
        jitcache.import_umap()  # already imported: nothing more
        again = gc.get_freeze_count()
        spacy_load.import_spacy()
        after_spacy = gc.get_freeze_count()
        print(start, after_umap, again, after_spacy, len(gc.get_objects()))
    """)
    start, after_umap, again, after_spacy, walked = map(int, out.split())
    assert after_umap > start + 20_000  # umap, numba, pynndescent, scikit-learn
    assert again == after_umap
    assert after_spacy > after_umap + 10_000
    assert walked < 5_000  # what a collection still walks


def test_outside_the_command_nothing_is_frozen():
    out = _fresh("""
        import gc
        from pipeline import jitcache, settle, spacy_load
        settle.now("the imports")
        jitcache.import_umap()
        spacy_load.import_spacy()
        print(gc.get_freeze_count())
    """)
    assert out == "0"


def test_cycles_made_after_a_freeze_are_still_collected():
    out = _fresh("""
        import gc, weakref
        from pipeline import settle
        settle.one_job()
        settle.now("the imports")
        class Node:
            pass
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        print(gone() is None)
    """)
    assert out == "True"


def test_the_command_settles_its_imports():
    """`lockstep` itself (``cli.entry``) is a one-job process; its imports are settled."""
    out = _fresh("""
        import gc
        from pipeline import cli, settle
        seen = []

        def app():
            seen.append(settle._one_job)
            with settle.importing("the imports"):
                seen.append(gc.isenabled())
            return 0

        cli.app = app
        try:
            cli.entry()
        except SystemExit as exc:
            seen.append(exc.code)
        print(seen, gc.isenabled(), gc.get_freeze_count() > 0)
    """)
    assert out == "[True, False, 0] True True"


def test_outside_the_command_imports_leave_the_collector_alone():
    out = _fresh("""
        import gc
        from pipeline import settle
        with settle.importing("the imports"):
            print(gc.isenabled())
        print(gc.isenabled(), gc.get_freeze_count())
    """)
    assert out == "True\nTrue 0"


def test_the_collector_comes_back_after_a_failed_import():
    out = _fresh("""
        import gc
        from pipeline import settle
        settle.one_job()
        try:
            with settle.importing("nothing"):
                import no_such_module_here
        except ImportError:
            pass
        print(gc.isenabled(), gc.get_freeze_count() > 0)
    """)
    assert out == "True True"


def test_without_collect_dead_cycles_are_frozen_with_the_rest():
    """For a process that has only imported: its few dead cycles stay, and nothing walks them."""
    out = _fresh("""
        import gc, weakref
        from pipeline import settle
        settle.one_job()

        class Node:
            pass

        def dead_cycle():
            a, b = Node(), Node()
            a.other, b.other = b, a
            return weakref.ref(a)

        gc.disable()
        kept = dead_cycle()
        with settle.importing("the imports", collect=False):
            pass
        gc.collect()
        freed = dead_cycle()
        with settle.importing("more"):
            pass
        print(kept() is not None, freed() is None, gc.isenabled())
    """)
    assert out == "True True True"
