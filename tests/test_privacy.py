import pytest
from typer.testing import CliRunner

from pipeline import export, privacy
from pipeline.cli import app
from pipeline.errors import ConfigError
from tests.test_escalate import run_escalation

KEY = b"0123456789abcdef-test-key"


def test_key_is_required_and_long_enough(tmp_path, monkeypatch):
    monkeypatch.delenv(privacy.KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match=r"set LOCKSTEP_PSEUDONYM_KEY or pass --key-file"):
        privacy.load_key()
    short = tmp_path / "k"
    short.write_text("short")
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        privacy.load_key(short)
    monkeypatch.setenv(privacy.KEY_ENV, KEY.decode())
    assert privacy.load_key() == KEY


def test_pseudonyms_are_keyed_and_stable():
    a = privacy.pseudonym(KEY, "a0042")
    assert a == privacy.pseudonym(KEY, "a0042") and a.startswith("acct_")
    assert a != privacy.pseudonym(KEY + b"x", "a0042")
    assert a != privacy.pseudonym(KEY, "a0043")


def test_pseudonymised_exports_hold_no_account_id_and_no_key(tmp_path):
    esc, truth = run_escalation(tmp_path / "plain", seed=7)
    out = tmp_path / "pseudo"
    export.write(esc, out, pseudonymise_key=KEY)
    real_ids = set(esc.accounts["account_id"]) | set(truth["accounts"])
    names = set(esc.accounts["account_name"])
    for path in out.iterdir():
        text = path.read_text(encoding="utf-8")
        assert KEY.decode() not in text, path.name
        leaked = [a for a in real_ids if f'"{a}"' in text or f",{a}," in text or f";{a}" in text
                  or f">{a}<" in text]
        assert not leaked, (path.name, leaked[:3])
        assert not [n for n in names if n and n in text], path.name
    again = export.load(out)
    assert again.accounts["account_id"].str.startswith("acct_").all()
    partners = ";".join(again.accounts["partners"]).split(";")
    assert all(p.startswith("acct_") for p in partners)


def test_export_cli_refuses_without_key(tmp_path, monkeypatch):
    monkeypatch.delenv(privacy.KEY_ENV, raising=False)
    result = CliRunner().invoke(app, ["export", str(tmp_path), "--pseudonymise"])
    assert result.exit_code == 2 and "LOCKSTEP_PSEUDONYM_KEY" in result.output
    result = CliRunner().invoke(app, ["export", str(tmp_path), "--key-file", "k"])
    assert result.exit_code == 2 and "only used with --pseudonymise" in result.output
