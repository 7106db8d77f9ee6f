import pytest

from models import build_model, model_names


@pytest.mark.parametrize("name,params", [
    ("fedavg_2nn", 199_210),    # McMahan et al. 2017
    ("fedavg_cnn", 1_663_370),  # McMahan et al. 2017
    ("mlp", 784 * 256 + 256 + 2 * (256 * 256 + 256) + 256 * 128 + 128 + 128 * 10 + 10),
    ("small_cnn", (25 * 32 + 32) + (25 * 32 * 64 + 64) + (1024 * 128 + 128) + (128 * 10 + 10)),
    ("cnn", (25 * 10 + 10) + (250 * 20 + 20) + (320 * 50 + 50) + (50 * 10 + 10)),
])
def test_parameter_counts(name, params):
  model = build_model(name)
  assert model.count_params() == params
  assert model.output_shape == (None, 10)
  assert not model._is_compiled  # pylint: disable=protected-access  # builders return uncompiled models


def test_unknown_model_lists_the_valid_ones():
  with pytest.raises(ValueError) as e:
    build_model("resnet")
  for name in model_names():
    assert name in str(e.value)


def test_flop_counts_by_hand():
  from models import flops  # pylint: disable=g-import-not-at-top
  mlp = build_model("mlp")
  assert flops.forward_flops(mlp) == 2 * (784 * 256 + 256 * 256 * 2 + 256 * 128 + 128 * 10)
  small = build_model("small_cnn")
  conv = 2 * (24 * 24 * 25 * 1 * 32 + 8 * 8 * 25 * 32 * 64)
  assert flops.forward_flops(small) == conv + 2 * (1024 * 128 + 128 * 10)
  assert flops.train_flops_per_example(small) == 3 * flops.forward_flops(small)
