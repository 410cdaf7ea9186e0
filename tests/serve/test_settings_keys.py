"""Settings and API keys, without a model: keys are stored hashed, the CLI prints a key once, a server
reachable from other machines refuses to start open, and bad settings fail before anything starts."""

import json

import pytest

from aird.cli import main
from aird.errors import ConfigError
from aird.serve import ServeSettings
from aird.serve.keys import KeyStore, add_key, hash_key, list_keys, remove_key
from aird.serve.settings import check_gallery_name, is_loopback


def test_keys_are_stored_as_hashes_only(tmp_path):
    path = tmp_path / "keys.json"
    key = add_key(path, "frontdesk", ["staff", "visitors"])
    assert key.startswith("aird_") and len(key) > 40
    text = path.read_text()
    assert key not in text and hash_key(key) in text
    blob = json.loads(text)
    assert blob["keys"][0]["galleries"] == ["staff", "visitors"] and blob["keys"][0]["name"] == "frontdesk"
    store = KeyStore(path)
    entry = store.find(key)
    assert entry.name == "frontdesk" and entry.may_use("staff") and not entry.may_use("other")
    assert store.find(key + "x") is None and store.find("") is None


def test_a_running_store_sees_added_and_removed_keys(tmp_path):
    path = tmp_path / "keys.json"
    first = add_key(path, "a", ["*"])
    store = KeyStore(path)
    assert store.find(first).may_use("anything")
    second = add_key(path, "b", ["g"])
    assert store.find(second).name == "b"
    remove_key(path, "a")
    assert store.find(first) is None
    path.write_text("{ half-written")  # a damaged file keeps the keys last read
    assert store.find(second).name == "b"


def test_key_management_errors(tmp_path):
    path = tmp_path / "keys.json"
    add_key(path, "a", ["g1"])
    with pytest.raises(ConfigError, match="exists"):
        add_key(path, "a", ["g1"])
    with pytest.raises(ConfigError, match="bad gallery name"):
        add_key(path, "b", ["../etc"])
    with pytest.raises(ConfigError, match="no key named 'zz'"):
        remove_key(path, "zz")
    (tmp_path / "bad.json").write_text('{"format": "something-else"}')
    with pytest.raises(ConfigError, match="not a valid API keys file"):
        add_key(tmp_path / "bad.json", "c", ["*"])  # never overwritten
    assert json.loads((tmp_path / "bad.json").read_text()) == {"format": "something-else"}


def test_cli_prints_a_new_key_once_and_stores_its_hash(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["serve", "--data-dir", str(data), "--add-key", "cam-room", "--galleries", "staff,lobby"]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert key.startswith("aird_") and "shown only now" in err
    [entry] = list_keys(data / "keys.json")
    assert entry.name == "cam-room" and entry.galleries == ("lobby", "staff") and entry.sha256 == hash_key(key)
    assert key not in (data / "keys.json").read_text()
    assert main(["serve", "--data-dir", str(data), "--list-keys"]) == 0
    assert "cam-room\tlobby,staff" in capsys.readouterr().out
    assert main(["serve", "--data-dir", str(data), "--add-key", "x"]) == 2
    assert "needs --galleries" in capsys.readouterr().err
    assert main(["serve", "--data-dir", str(data), "--remove-key", "cam-room"]) == 0
    assert list_keys(data / "keys.json") == []


def test_cli_passes_its_settings_to_the_server(tmp_path, monkeypatch):
    import aird.serve

    seen = []
    monkeypatch.setattr(aird.serve, "serve", seen.append)
    argv = ["serve", "--port", "9123", "--data-dir", str(tmp_path), "--workers", "3", "--queue", "5"]
    argv += ["--max-body-mb", "2.5", "--max-pixels", "1000000", "--max-faces", "4", "--model", "m.safetensors"]
    assert main(argv) == 0
    [s] = seen
    assert (s.port, s.workers, s.queue, s.max_body_mb, s.max_pixels, s.max_faces, s.model) == (
        9123,
        3,
        5,
        2.5,
        1_000_000,
        4,
        "m.safetensors",
    )
    assert s.host == "127.0.0.1" and s.data_dir == tmp_path and s.keys_path == tmp_path / "keys.json"


def test_open_server_only_on_loopback(tmp_path, capsys):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    assert ServeSettings(data_dir=tmp_path).check().auth == "off"
    public = ServeSettings(data_dir=tmp_path, host="0.0.0.0")
    assert public.auth == "refused"
    with pytest.raises(ConfigError, match="--add-key") as err:
        public.check()
    assert "--no-auth" in str(err.value)
    assert ServeSettings(data_dir=tmp_path, host="0.0.0.0", no_auth=True).check().auth == "off"
    add_key(tmp_path / "keys.json", "a", ["*"])
    assert public.check().auth == "keys"
    assert ServeSettings(data_dir=tmp_path).auth == "keys"  # a keys file turns keys on, loopback too
    # The CLI refuses before loading any model, in one line.
    assert main(["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aird: error:") and "refusing to serve 0.0.0.0" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "setting, value",
    [("workers", 0), ("queue", -1), ("max_faces", 0), ("max_pixels", 10**12), ("max_body_mb", 0), ("port", 70000)],
)
def test_bad_settings_are_refused(tmp_path, setting, value):
    with pytest.raises(ConfigError, match=setting):
        ServeSettings(data_dir=tmp_path, **{setting: value}).check()


def test_adapt_streams_need_a_mode_and_a_camera(tmp_path, monkeypatch):
    for bad in (
        {"adapt_streams": ["cam-3"]},
        {"adapt": "off", "adapt_streams": ["cam-3"]},
        {"adapt": "facebn-safe", "adapt_streams": []},
    ):
        with pytest.raises(ConfigError, match="adapt_streams"):
            ServeSettings(data_dir=tmp_path, **bad).check()
    import aird.serve

    seen = []
    monkeypatch.setattr(aird.serve, "serve", seen.append)
    argv = ["serve", "--data-dir", str(tmp_path), "--adapt", "facebn-safe", "--adapt-streams", "cam-3, cam-7"]
    assert main(argv) == 0 and seen[0].adapt_streams == ["cam-3", "cam-7"]


def test_gallery_names_cannot_leave_the_data_dir():
    for bad in ("", "../x", "a/b", ".hidden", "a b", "x" * 101):
        with pytest.raises(ConfigError):
            check_gallery_name(bad)
    assert check_gallery_name("staff-2024.v1_a") == "staff-2024.v1_a"
