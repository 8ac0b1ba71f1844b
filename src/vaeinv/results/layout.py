"""How a run's observed values are laid out in its ``InferenceData``: one ``sensor`` dimension,
or ``(experiment, sensor)`` for several experiments on one field.

A posterior of one experiment (Darcy heads at sensors, or any forward model) keeps the values
along ``sensor``, with ``sensor_x``, ``sensor_y`` coordinates when the sensors are known. A
posterior of several experiments
([`ExperimentReadings`][vaeinv.physics.experiments.ExperimentReadings]) whose experiments
observe as many values each gets the dimensions ``(experiment, sensor)``:
``experiment`` holds the experiments' names and ``kind (experiment, sensor)`` what each value is
(``head``, ``head-difference``, ``flux``); ``idata.log_likelihood["y"].sel(experiment="pump-1")``
is one test's fit. Experiments of different lengths stay along one ``sensor`` dimension with
``experiment`` and ``kind`` as coordinates of each value (``groupby("experiment")``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["DataLayout"]


class DataLayout:
    """The dimensions and coordinates of the observed values of ``posterior``."""

    def __init__(self, posterior, num_values: int) -> None:
        forward = getattr(posterior, "forward_model", None)
        sizes = getattr(forward, "sizes", None)
        names = getattr(forward, "names", None)
        self.num_values = num_values
        self.shape: tuple[int, ...] = (num_values,)
        self.dims: tuple[str, ...] = ("sensor",)
        self.coords: dict[str, Any] = {"sensor": np.arange(num_values)}
        sensors = getattr(posterior, "sensors", None)
        self.sensor_xy = None if sensors is None else _numpy(sensors.xy).astype(np.float64)
        if self.sensor_xy is not None:
            self.coords["sensor_x"] = ("sensor", self.sensor_xy[:, 0])
            self.coords["sensor_y"] = ("sensor", self.sensor_xy[:, 1])
        if sizes is None or names is None or sum(sizes) != num_values:
            return
        kinds = [k for seen in forward.observations for k in seen.kinds]
        if len(set(sizes)) == 1:
            e, m = len(sizes), sizes[0]
            self.shape, self.dims = (e, m), ("experiment", "sensor")
            self.coords = {
                "experiment": np.array(names, dtype=str),
                "sensor": np.arange(m),
                "kind": (self.dims, np.array(kinds, dtype=str).reshape(e, m)),
            }
        else:
            per_value = [n for n, size in zip(names, sizes, strict=True) for _ in range(size)]
            self.coords["experiment"] = ("sensor", np.array(per_value, dtype=str))
            self.coords["kind"] = ("sensor", np.array(kinds, dtype=str))

    @property
    def experiments(self) -> bool:
        """Whether the values have an ``experiment`` dimension."""
        return "experiment" in self.dims

    def arrange(self, values: np.ndarray) -> np.ndarray:
        """``(..., m)`` values in this layout: ``(..., *shape)``."""
        return values.reshape(*values.shape[:-1], *self.shape)


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)
