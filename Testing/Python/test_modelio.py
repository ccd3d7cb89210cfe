import pickle

import pytest
import torch

from conftest import make_model_file
from deepsim.modelio import ModelFileError, load_model, read_model_file


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_model_round_trip(tmp_path):
    path = make_model_file(tmp_path / "m.pt", 2)
    model = load_model(path)
    assert model.spatial_dims == 2 and set(model.networks) == {"registration", "extractor"}
    assert not model.registration.training
    x = torch.rand(1, 1, 32, 32)
    assert model.registration(x, x).shape == (1, 2, 32, 32)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "deepsim", "payload": _Evil()}, path)
    with pytest.raises(ModelFileError, match="objects other than tensors .* never loaded"):
        read_model_file(path)


def test_other_formats_are_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ModelFileError, match="not a deepsim model file"):
        read_model_file(path)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ModelFileError):
        read_model_file(plain)


def test_mismatched_weights_are_refused(tmp_path):
    path = make_model_file(tmp_path / "m.pt", 2)
    payload = torch.load(path, weights_only=True)
    payload["networks"]["registration"].popitem()
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match="does not match its config"):
        load_model(path)


def test_wrong_dimension_is_refused(tmp_path):
    path = make_model_file(tmp_path / "m.pt", 3)
    with pytest.raises(ModelFileError, match="3D model but the images are 2D"):
        load_model(path, spatial_dims=2)
