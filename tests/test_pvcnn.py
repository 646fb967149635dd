"""The point-voxel network (ddpmkit.nets.pvcnn, PVCNN of Liu et al. 2019): voxel maps against
closed forms, permutation equivariance, any N, the config round trip and the registry."""
from __future__ import annotations

import pytest
import torch

from ddpmkit.nets import NETWORK_KINDS, PVCNN, PVCNNConfig, build_network, network_config_from_dict, network_config_to_dict
from ddpmkit.nets.voxel import devoxelize, grid_coordinates, voxelize

# Permuting the points reorders the float sums of the voxel averages (index_add_) and of the
# pooled means; in float64 that moves results by a few ulps of values of order 1 through a
# network of ~10 layers: 1e-12 is ~5000 ulps of 1.0, far below any real mismatch (~1e-2).
PERMUTATION_TOL = 1e-12
SMALL = dict(channels=(16, 16), resolutions=(4, 6), voxel_channels=8, time_dim=16, embed_dim=32, groups=4,
             zero_init=False)


def test_grid_coordinates_fill_the_unit_cube_in_voxel_units() -> None:
    # PVCNN's normalisation: centred on the mean, the farthest point at distance 1/2 from the centre
    x = torch.tensor([[[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, -0.5, 0.0]]], dtype=torch.float64)
    g = grid_coordinates(x, 5, eps=0.0)
    expected = torch.tensor([[[4.0, 2.0, 2.0], [0.0, 2.0, 2.0], [2.0, 3.0, 2.0], [2.0, 1.0, 2.0]]], dtype=torch.float64)
    torch.testing.assert_close(g, expected, rtol=0, atol=1e-15)   # one rounding of values <= 4


def test_voxelize_averages_the_points_of_each_voxel() -> None:
    coords = torch.tensor([[[0.0, 0.0, 0.0], [0.2, -0.1, 0.3], [1.0, 2.0, 3.0], [3.0, 3.0, 3.0]]], dtype=torch.float64)
    f = torch.tensor([[[1.0, 10.0], [3.0, 20.0], [5.0, 7.0], [-2.0, 4.0]]], dtype=torch.float64)
    grid = voxelize(f, coords, 4)
    assert grid.shape == (1, 2, 4, 4, 4)
    expected = torch.zeros(1, 2, 4, 4, 4, dtype=torch.float64)
    expected[0, :, 0, 0, 0] = torch.tensor([2.0, 15.0])     # the mean of the two points in voxel (0, 0, 0)
    expected[0, :, 1, 2, 3] = torch.tensor([5.0, 7.0])
    expected[0, :, 3, 3, 3] = torch.tensor([-2.0, 4.0])
    torch.testing.assert_close(grid, expected, rtol=0, atol=1e-15)   # sums of two small integers, one division


def test_devoxelize_is_trilinear_interpolation() -> None:
    g = torch.Generator().manual_seed(0)
    grid = torch.randn(2, 3, 5, 5, 5, generator=g, dtype=torch.float64)
    coords = torch.rand(2, 7, 3, generator=g, dtype=torch.float64) * 4
    coords[:, 0] = torch.tensor([1.0, 2.0, 3.0])   # a voxel centre reads that voxel
    out = devoxelize(grid, coords)
    # the textbook trilinear formula: sum over the 8 corners of prod_k (1 - |c_k - corner_k|)
    lower = coords.floor().clamp(max=3).long()
    expected = torch.zeros(2, 7, 3, dtype=torch.float64)
    for corner in torch.cartesian_prod(*[torch.tensor([0, 1])] * 3):
        idx = lower + corner
        weight = (1 - (coords - idx).abs()).prod(dim=2)
        b = torch.arange(2)[:, None]
        expected += weight[..., None] * grid[b, :, idx[..., 0], idx[..., 1], idx[..., 2]]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)   # 8-term sums of O(1) values in float64
    torch.testing.assert_close(out[:, 0], grid[:, :, 1, 2, 3], rtol=0, atol=1e-12)


@pytest.mark.parametrize("neighbors", [0, 6])
@pytest.mark.parametrize("conditional", [False, True])
def test_permutation_equivariance(conditional: bool, neighbors: int) -> None:
    torch.manual_seed(0)
    net = PVCNN(PVCNNConfig(**SMALL, conditional=conditional, neighbors=neighbors)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 40, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([3, 50, 99])
    partial = torch.randn(3, 17, 3, generator=g, dtype=torch.float64) if conditional else None
    kw = {"partial": partial} if conditional else {}
    out = net(x, t, **kw)
    perm = torch.randperm(40, generator=g)
    torch.testing.assert_close(net(x[:, perm], t, **kw), out[:, perm], rtol=0, atol=PERMUTATION_TOL)
    assert out.abs().mean() > 1e-3   # not trivially zero
    if conditional:   # the partial's order does not matter
        q = torch.randperm(17, generator=g)
        torch.testing.assert_close(net(x, t, partial=partial[:, q]), out, rtol=0, atol=PERMUTATION_TOL)
        moved = net(x, t, partial=partial + 0.3)
        assert (moved - out).abs().amax() > 1e-3   # and it is read


def test_class_labels_keep_equivariance_and_are_read() -> None:
    """``num_classes``: a label per cloud (B,), embedded beside the time; the points' order still
    does not matter, each label gives its own output, and no label is the null class."""
    torch.manual_seed(0)
    net = PVCNN(PVCNNConfig(**SMALL, num_classes=5, neighbors=4)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 40, 3, generator=g, dtype=torch.float64)
    t, y = torch.tensor([3, 50, 99]), torch.tensor([0, 4, 2])
    out = net(x, t, y=y)
    perm = torch.randperm(40, generator=g)
    torch.testing.assert_close(net(x[:, perm], t, y=y), out[:, perm], rtol=0, atol=PERMUTATION_TOL)
    assert (net(x, t, y=torch.tensor([1, 3, 0])) - out).abs().amax(dim=(1, 2)).min() > 1e-3
    # the same float64 operations in the same order: bit for bit
    torch.testing.assert_close(net(x, t), net(x, t, y=torch.full((3,), 5)), rtol=0, atol=0)
    with pytest.raises(ValueError, match="num_classes"):
        PVCNNConfig(num_classes=0)
    with pytest.raises(ValueError, match="no class embedding"):
        PVCNN(PVCNNConfig(**SMALL))(x.float(), t, y=y)


def test_the_local_branch_reads_each_points_nearest_points() -> None:
    """_nearest against a brute-force search (itself first, then the k - 1 nearest others); fewer
    points than k gives all of them; a negative k is refused."""
    from ddpmkit.nets.pvcnn import _nearest
    g = torch.Generator().manual_seed(2)
    points = torch.randn(2, 30, 3, generator=g, dtype=torch.float64)
    index, offsets = _nearest(points, 5)
    for b in range(2):
        for i in range(30):
            d = ((points[b] - points[b, i]) ** 2).sum(1)
            assert set(index[b, i].tolist()) == set(torch.argsort(d)[:5].tolist()) and index[b, i, 0] == i
    torch.testing.assert_close(offsets[0, 3, 2], points[0, index[0, 3, 2]] - points[0, 3], rtol=0, atol=0)
    assert _nearest(points[:, :3], 5)[0].shape == (2, 3, 3)   # fewer points than k: all of them
    with pytest.raises(ValueError, match="neighbors"):
        PVCNNConfig(neighbors=-1)


def test_any_number_of_points_and_learned_variance_layout() -> None:
    net = PVCNN(PVCNNConfig(**{**SMALL, "zero_init": True}, out_dim=6, neighbors=4))
    for n in (1, 2, 9):
        out = net(torch.randn(2, n, 3), torch.tensor(5))
        assert out.shape == (2, 2 * n, 3)
        assert out.abs().amax() == 0   # zero-initialised head: the zero function


def test_config_round_trip_registry_and_errors() -> None:
    assert NETWORK_KINDS["pvcnn"] is PVCNNConfig
    cfg = PVCNNConfig(**SMALL, conditional=True)
    saved = network_config_to_dict(cfg)
    assert saved["kind"] == "pvcnn"
    same = network_config_from_dict(saved)
    assert same == cfg and isinstance(build_network(same), PVCNN)
    with pytest.raises(ValueError, match="resolutions"):
        PVCNNConfig(channels=(8, 8), resolutions=(4,))
    with pytest.raises(ValueError, match="groups"):
        PVCNNConfig(voxel_channels=12, groups=8)
    net = PVCNN(PVCNNConfig(**SMALL))
    with pytest.raises(ValueError, match="partial"):
        net(torch.randn(1, 5, 3), torch.tensor(1), partial=torch.randn(1, 2, 3))
    with pytest.raises(ValueError, match="x must"):
        net(torch.randn(1, 5, 2), torch.tensor(1))
    cond = PVCNN(PVCNNConfig(**SMALL, conditional=True))
    with pytest.raises(ValueError, match="conditional"):
        cond(torch.randn(1, 5, 3), torch.tensor(1))


def test_presets_build_pvcnn() -> None:
    from ddpmkit.training.presets import load_config

    for name in ("shapes-pvcnn", "shapes-pvcnn-cond", "shapes-completion-pdr"):
        config = load_config(name)
        assert config.network_kind == "pvcnn"
        assert isinstance(build_network(config.network), PVCNN)
