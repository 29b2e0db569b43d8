"""All the soft IOCs of a beamline at once, and the ``[epics.*]`` config that points ``mode="real"`` at them.

``python -m xbeam_bluesky.testing.iocs.beamline --config DIR/xbeam.toml --frames-dir DIR/frames`` starts the
monochromator, stage, shutter, camera and powder-detector IOCs on free loopback ports, writes the config
(PV prefixes, frame directory, powder calibration and the matching ``[live.rietveld]`` instrument file) and
prints the environment a client needs; it stops every IOC (by PID) on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from xbeam_bluesky.devices.sim.camera_model import CameraModel
from xbeam_bluesky.testing.iocs._launch import IocProcess, client_environment, free_port

__all__ = ["SoftBeamline", "main"]

#: GSAS-II instrument file of the powder IOC's patterns (the lab Cu Kα defaults they are rendered with).
CU_KA_INSTPRM = """#GSAS-II instrument parameter file: lab Cu Ka defaults (what the powder soft IOC renders)
Type:PXC;Bank:1
Lam1:1.5405;Lam2:1.5443;Zero:0.0;Polariz.:0.7;Azimuth:0.0;I(L2)/I(L1):0.5
U:2.0;V:-2.0;W:5.0;X:0.0;Y:0.0;Z:0.0;SH/L:0.002
"""


@dataclass
class SoftBeamline:
    """The soft IOCs of one beamline: prefixes, camera rendering options and the processes.

    Attributes
    ----------
    frames_dir
        Where the camera IOC's HDF5 plugin writes (``write_dir`` = ``read_dir`` in the config).
    frame_shape, pixel_size_um, sample_size_mm, seed
        The camera's frames and the phantom (as :class:`~xbeam_bluesky.devices.sim.SimBeamlineConfig`).
    mono_limits_eV, x_limits_mm, y_limits_mm
        Motor-record soft limits.
    stage_velocity_mm_s, mono_velocity_eV_s
        Motor speeds (``VELO``).
    powder_channels
        Channels of the powder detector.
    photon_flux
        Open-beam photons per pixel per s of the camera (:class:`CameraModel`).
    stall_timeout_s
        ``stall_timeout_s`` of the mono and the stage in the written config (s).
    log_dir
        Each IOC's output goes to ``log_dir/<name>.log`` (default: discarded).
    """

    frames_dir: Path
    frame_shape: tuple[int, int] = (256, 256)
    pixel_size_um: float = 4.0
    sample_size_mm: tuple[float, float] = (20.0, 10.0)
    seed: int = 0
    mono_limits_eV: tuple[float, float] = (6500.0, 9000.0)
    x_limits_mm: tuple[float, float] = (-15.0, 15.0)
    y_limits_mm: tuple[float, float] = (-10.0, 10.0)
    stage_velocity_mm_s: float = 5.0
    mono_velocity_eV_s: float = 20.0
    powder_channels: int = 5500
    photon_flux: float = 2.0e4
    stall_timeout_s: float = 5.0
    log_dir: Path | None = None
    prefixes: dict[str, str] = field(
        default_factory=lambda: {
            "mono": "XB:DCM:",
            "stage": "XB:SMPL:",
            "shutter": "XB:SHTR:",
            "camera": "XB:SCMOS1:",
            "xrd": "XB:MYTHEN:",
        }
    )
    iocs: dict[str, IocProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.frames_dir = Path(self.frames_dir)
        p = self.prefixes
        ports = {name: free_port() for name in p}
        self.ports = ports
        client = self.client_environment()
        height, width = self.frame_shape
        self.iocs = {
            "mono": self._ioc(
                "mono",
                [
                    "--limits",
                    *map(str, self.mono_limits_eV),
                    "--velocity",
                    str(self.mono_velocity_eV_s),
                ],
            ),
            "stage": self._ioc(
                "motor",
                [
                    "--axis",
                    f"X:{self.x_limits_mm[0]}:{self.x_limits_mm[1]}",
                    "--axis",
                    f"Y:{self.y_limits_mm[0]}:{self.y_limits_mm[1]}",
                    "--velocity",
                    str(self.stage_velocity_mm_s),
                ],
                name="stage",
            ),
            "shutter": self._ioc("shutter", []),
            "camera": self._ioc(
                "camera",
                [
                    "--shape",
                    str(height),
                    str(width),
                    "--pixel-um",
                    str(self.pixel_size_um),
                    "--sample-mm",
                    *map(str, self.sample_size_mm),
                    "--seed",
                    str(self.seed),
                    "--photon-flux",
                    str(self.photon_flux),
                    "--energy-pv",
                    p["mono"] + "Energy.RBV",
                    "--x-pv",
                    p["stage"] + "X.RBV",
                    "--y-pv",
                    p["stage"] + "Y.RBV",
                    "--shutter-pv",
                    p["shutter"] + "STS",
                ],
                env=client,
            ),
            "xrd": self._ioc("powder", ["--channels", str(self.powder_channels)], name="xrd"),
        }

    def _ioc(self, module: str, args: list[str], *, name: str | None = None, env: dict | None = None):
        name = name or module
        log = self.log_dir / f"{name}.log" if self.log_dir is not None else None
        return IocProcess(module, self.prefixes[name], self.ports[name], args, env=env, log_path=log)

    def camera_model(self) -> CameraModel:
        """The detector model the camera IOC renders its frames with (the sim camera's physics)."""
        return CameraModel(
            shape=self.frame_shape, pixel_size_um=self.pixel_size_um, photon_flux=self.photon_flux,
            flat_seed=self.seed,
        )  # fmt: skip

    def client_environment(self) -> dict[str, str]:
        """``EPICS_CA_ADDR_LIST`` (every IOC's port) and ``EPICS_CA_AUTO_ADDR_LIST=NO``."""
        return client_environment(list(self.ports.values()))

    def start(self, names: list[str] | None = None) -> SoftBeamline:
        """Start the IOCs (all, or ``names``) and wait until each listens."""
        self.frames_dir.mkdir(parents=True, exist_ok=True)
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            chosen = [self.iocs[name] for name in names or list(self.iocs)]
            for ioc in chosen:  # in parallel: each takes a few seconds to import its libraries
                ioc.spawn()
            for ioc in chosen:
                ioc.wait_ready()
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every IOC (by PID)."""
        for ioc in self.iocs.values():
            ioc.stop()

    def pids(self) -> dict[str, int]:
        """Process ids of the running IOCs."""
        return {name: ioc.pid for name, ioc in self.iocs.items() if ioc.pid is not None}

    def write_config(
        self, path: str | Path, *, with_xrd: bool = True, extra: str = "", rietveld: dict | None = None
    ) -> Path:
        """Write the TOML config of ``mode="real"`` for these IOCs (and the powder instrument file next to it).

        Parameters
        ----------
        path
            The TOML file.
        with_xrd
            Include ``[epics.xrd]`` and ``[live.rietveld] instrument``.
        extra
            TOML text put before the tables (e.g. ``data_dir = ...``).
        rietveld
            Further ``[live.rietveld]`` options (e.g. ``{"n_trials": 4}``), numbers or strings.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        p = self.prefixes
        half_w = self.sample_size_mm[0] / 2
        lines = [
            "# written by python -m xbeam_bluesky.testing.iocs.beamline: the soft IOCs of a dry run",
            "[epics.mono]",
            f'prefix = "{p["mono"]}"',
            f"limits_eV = {list(self.mono_limits_eV)}",
            f"stall_timeout_s = {self.stall_timeout_s}",
            "",
            "[epics.stage]",
            f'prefix = "{p["stage"]}"',
            f"x_limits_mm = {list(self.x_limits_mm)}",
            f"y_limits_mm = {list(self.y_limits_mm)}",
            f"out_position_mm = [{half_w + 4.0}, 0.0]",
            f"stall_timeout_s = {self.stall_timeout_s}",
            "",
            "[epics.camera]",
            f'prefix = "{p["camera"]}"',
            f'write_dir = "{self.frames_dir}"',
            f'read_dir = "{self.frames_dir}"',
            f"shape = {list(self.frame_shape)}",
            f"pixel_size_um = {self.pixel_size_um}",
            "readout_s = 0.01",
            *self._noise_lines(),
            "",
            "[epics.shutter]",
            f'command = "{p["shutter"]}CMD"',
            f'status = "{p["shutter"]}STS"',
            "",
        ]
        if with_xrd:
            instprm = path.with_name("soft_powder_CuKa.instprm")
            instprm.write_text(CU_KA_INSTPRM)
            lines += [
                "[epics.xrd]",
                f'prefix = "{p["xrd"]}"',
                f"n_channels = {self.powder_channels}",
                "two_theta_start_deg = 10.0",
                "two_theta_step_deg = 0.02",
                "timeout_s = 10.0",
                "",
                "[live.rietveld]",
                f'instrument = "{instprm.name}"',
                *(f"{key} = {value!r}" if not isinstance(value, str) else f'{key} = "{value}"'
                  for key, value in (rietveld or {}).items()),
                "",
            ]  # fmt: skip
        path.write_text(extra + "\n" + "\n".join(lines) if extra else "\n".join(lines))
        return path

    def _noise_lines(self) -> list[str]:
        """The ``[epics.camera]`` noise keys, as a beamline measures them, from the camera IOC's model."""
        model = self.camera_model()
        dark = model.dark_offset
        peak = float(model.expected_frame(None, 1.0).max()) - dark
        return [
            f"gain = {model.gain!r}",
            f"read_noise = {model.read_noise!r}",
            f"dark_offset = {dark!r}",
            f"i0_counts_per_s = {model.i0_counts(1.0)!r}",
            f"peak_counts_per_s = {peak!r}",
        ]


def main(argv: list[str] | None = None) -> None:
    """``python -m xbeam_bluesky.testing.iocs.beamline``: run the soft beamline until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(description="Start every soft IOC and write the real-mode config.")
    parser.add_argument("--config", type=Path, required=True, help="TOML config to write")
    parser.add_argument("--frames-dir", type=Path, required=True, help="camera frame directory")
    parser.add_argument("--shape", type=int, nargs=2, default=(256, 256), metavar=("NY", "NX"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", type=Path, default=None, help="one log file per IOC here")
    args = parser.parse_args(argv)
    beamline = SoftBeamline(
        args.frames_dir.resolve(), tuple(args.shape), seed=args.seed, log_dir=args.log_dir
    )
    beamline.write_config(args.config)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    beamline.start()
    try:
        env = " ".join(f"{k}='{v}'" for k, v in beamline.client_environment().items())
        print(f"soft IOCs running: {beamline.pids()}", flush=True)
        print(f"export {env} XBEAM_CONFIG={args.config.resolve()}", flush=True)
        print(
            "then e.g. XBEAM_MODE=real ipython --profile-dir=profiles/profile_xbeam; Ctrl-C stops the IOCs",
            flush=True,
        )
        while all(ioc.running() for ioc in beamline.iocs.values()):
            time.sleep(0.5)
        died = [name for name, ioc in beamline.iocs.items() if not ioc.running()]
        print(f"soft IOC(s) {died} exited; stopping the others", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        beamline.stop()


if __name__ == "__main__":
    main()
