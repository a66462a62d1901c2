"""Any image model run over a volume slice by slice: `slices/<name>`, e.g. `slices/unet`.

    model = zoo.create_model("slices/unet", num_classes=3, in_channels=1, base_channels=16)
    model(torch.randn(2, 1, 8, 64, 64)).shape    # (2, 3, 8, 64, 64): each of the 8 slices in 2D

The wrapped model sees each plane perpendicular to `axis` (0: D, the default; 1: H; 2: W) as a 2D
image, batched together: what nnU-Net's `2d` configuration trains on a volume whose slices are
far apart. A volume model to the rest of bioseg (spatial_dims 3: patches of one slice train it,
sliding windows predict it); its options are the wrapped model's, plus `axis`.
"""

from __future__ import annotations

from torch import Tensor, nn

from zoo import ModelSpec, get_spec, register_prefix

PREFIX = "slices/"


class SliceWise(nn.Module):
    """`net` (N x C x H x W -> N x K x H x W) applied to every plane along `axis` of a volume."""

    def __init__(self, net: nn.Module, axis: int = 0) -> None:
        super().__init__()
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0 (D), 1 (H) or 2 (W), got {axis!r}")
        self.net, self.axis = net, axis

    def forward(self, x: Tensor) -> Tensor:
        moved = x.movedim(2 + self.axis, 1)  # N x S x C x P x Q: the slices next to the batch
        n, s = moved.shape[:2]
        planes = self.net(moved.reshape(n * s, *moved.shape[2:]))
        return planes.reshape(n, s, *planes.shape[1:]).movedim(1, 2 + self.axis)


def _spec(name: str) -> ModelSpec:
    """The spec of `slices/<image model>`: a KeyError for a name that is not one."""
    inner = get_spec(name[len(PREFIX) :])
    if inner.spatial_dims != 2:
        raise KeyError(f"{name}: '{inner.name}' is not an image model, so it has no slices")

    def build(
        *, num_classes: int, in_channels: int, pretrained: bool = False, axis: int = 0, **options
    ):
        net = inner.builder(
            num_classes=num_classes, in_channels=in_channels, pretrained=pretrained, **options
        )
        return SliceWise(net, axis)

    return ModelSpec(
        name=name,
        summary=f"{inner.name} on each slice of a volume ({inner.summary})",
        builder=build,
        family=inner.family,
        spatial_dims=3,
        mean=(0.0,),  # volumes come normalized by the trainers (trainers.volumes.intensity)
        std=(1.0,),
        default_kwargs=dict(inner.default_kwargs),
        origin=inner.origin,
        module=__name__,
    )


register_prefix(PREFIX, _spec)
