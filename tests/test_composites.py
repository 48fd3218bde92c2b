"""The composite registry: built-in presets, and composites a user registers."""

import pytest
import torch
from torch import nn

import xaibench
from xaibench.errors import UnknownMethodError
from xaibench.lrp import Composite, composites, register_composite, unregister_composite
from xaibench.lrp import rules as R

BUILT_IN = ["lrp.alpha1beta0", "lrp.alpha2beta1", "lrp.alpha_beta", "lrp.epsilon", "lrp.epsilon_alpha2beta1",
            "lrp.epsilon_gamma_box", "lrp.epsilon_plus", "lrp.epsilon_plus_flat", "lrp.flat", "lrp.gamma",
            "lrp.preset_a", "lrp.preset_b", "lrp.wsquare", "lrp.z", "lrp.zbox", "lrp.zplus"]
NAME = "lrp.test_custom"


@pytest.fixture
def cleanup():
    """Removes whatever a test registered, so the registry is as before for other tests."""
    before = dict(composites.REGISTRY)
    yield
    for name in set(composites.REGISTRY) - set(before):
        unregister_composite(name)
    for name, builder in before.items():
        if composites.REGISTRY[name] is not builder:
            register_composite(name, builder, replace=True)
    assert dict(composites.REGISTRY) == before


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double().eval()


def _epsilon_dense_zplus_conv(o):
    """epsilon on dense, z+ on conv."""
    return Composite(NAME, {"dense": R.Epsilon(o["epsilon"], o["bias"]), "conv": R.ZPlus(o["stabilizer"], o["bias"]),
                            "batchnorm": R.Epsilon(o["epsilon"], o["bias"])})


def test_registry_holds_the_built_in_presets():
    assert composites.names() == BUILT_IN
    assert sorted(composites.REGISTRY) == BUILT_IN
    assert set(BUILT_IN) <= set(xaibench.methods("native"))
    assert all(composites.description(name) for name in BUILT_IN)
    with pytest.raises(TypeError):
        composites.REGISTRY["lrp.x"] = _epsilon_dense_zplus_conv   # read-only view


@pytest.mark.parametrize("method", BUILT_IN)
def test_every_preset_builds_with_default_options(method):
    built = composites.composite(method)
    assert isinstance(built, Composite)
    assert built.name == method
    assert set(built.layer_rules) == {"dense", "conv", "batchnorm"}
    assert built.maxpool == "winner_take_all" and built.norm_stabilizer == R.DEFAULT_STABILIZER


def test_presets_match_hand_built_composites():
    eps, plus = R.Epsilon(0.5, True), R.ZPlus(1e-3, True)
    expected = Composite("lrp.epsilon_plus", {"dense": eps, "conv": plus, "batchnorm": eps}, norm_stabilizer=1e-3)
    assert composites.composite("lrp.epsilon_plus", epsilon=0.5, stabilizer=1e-3).describe() == expected.describe()

    box = R.ZBox(-1.0, 1.0, R.DEFAULT_STABILIZER, False)
    plus = R.ZPlus(R.DEFAULT_STABILIZER, False)
    expected = Composite("lrp.zbox", {"dense": plus, "conv": plus, "batchnorm": plus}, {"dense": box, "conv": box},
                         low=-1.0, high=1.0)
    built = composites.composite("lrp.zbox", low=-1.0, high=1.0, bias=False)
    assert built.describe() == expected.describe()
    assert (built.low, built.high) == (-1.0, 1.0) and built.needs_bounds()


def test_registered_composite_explains_and_is_listed(cleanup):
    register_composite(NAME, _epsilon_dense_zplus_conv)
    assert NAME in xaibench.methods("native") and NAME in xaibench.methods()["native"]
    assert composites.description(NAME) == "epsilon on dense, z+ on conv."
    model, x = _net(), torch.randn(5, 4, dtype=torch.float64)
    e = xaibench.explain(model, x, method=NAME, epsilon=1e-9)
    assert e.method == NAME
    reference = xaibench.explain(model, x, method="lrp.epsilon", epsilon=1e-9)
    torch.testing.assert_close(e.relevance, reference.relevance, rtol=0, atol=0)
    assert e.conservation_error.abs().max() < 1e-10


def test_decorator_form(cleanup):
    @register_composite(NAME)
    def build(o):
        """LRP-0 everywhere."""
        rule = R.Z(o["stabilizer"], o["bias"])
        return Composite(NAME, {"dense": rule, "conv": rule, "batchnorm": rule})

    assert composites.REGISTRY[NAME] is build
    assert composites.composite(NAME, maxpool="proportional").maxpool == "proportional"


def test_duplicate_name_refused_unless_replace(cleanup):
    register_composite(NAME, _epsilon_dense_zplus_conv)
    with pytest.raises(ValueError, match="already registered.*replace=True"):
        register_composite(NAME, _epsilon_dense_zplus_conv)
    with pytest.raises(ValueError, match="already registered"):
        register_composite("lrp.epsilon", _epsilon_dense_zplus_conv)

    def other(o):
        return Composite(NAME, {"dense": R.Z(), "conv": R.Z(), "batchnorm": R.Z()})

    assert register_composite(NAME, other, replace=True) is other
    assert composites.REGISTRY[NAME] is other
    assert isinstance(composites.composite(NAME).layer_rules["dense"], R.Z)


@pytest.mark.parametrize("name", ["my_rule", "epsilon", "LRP.x", "lrp.", "", None])
def test_name_without_lrp_prefix_refused(name, cleanup):
    with pytest.raises(ValueError, match="must start with 'lrp.'"):
        register_composite(name, _epsilon_dense_zplus_conv)
    assert name not in composites.REGISTRY


def test_builder_not_returning_a_composite(cleanup):
    register_composite(NAME, lambda o: {"dense": R.Epsilon()})
    with pytest.raises(TypeError, match=r"builder of composite 'lrp.test_custom'.*returned dict, not a .*Composite"):
        xaibench.explain(_net(), torch.randn(2, 4, dtype=torch.float64), method=NAME)
    with pytest.raises(TypeError, match="must be callable"):
        register_composite("lrp.test_other", "not a function")


def test_unknown_method_lists_registered_names(cleanup):
    register_composite(NAME, _epsilon_dense_zplus_conv)
    with pytest.raises(UnknownMethodError) as info:
        xaibench.explain(_net(), torch.randn(2, 4, dtype=torch.float64), method="lrp.nope")
    assert NAME in info.value.available and "lrp.epsilon" in info.value.available
    with pytest.raises(UnknownMethodError) as info:
        composites.composite("lrp.nope")
    assert NAME in info.value.available
    unregister_composite(NAME)
    assert NAME not in xaibench.methods("native")
    with pytest.raises(UnknownMethodError):
        unregister_composite(NAME)
