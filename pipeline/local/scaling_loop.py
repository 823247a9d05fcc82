"""What ``pipeline up`` does about its members' numbers: hear ``pipeline scale``, run the autoscaler, say what runs.

Kept apart from the supervisor (which starts, restarts and stops processes)
so either can change without the other: this only calls
:meth:`Supervisor.resize` and reads its members.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass

from pipeline.local.autoscale import Autoscaler
from pipeline.local.control import ControlChannel, partitions_of, write_state
from pipeline.local.supervisor import Supervisor
from pipeline.operations.scaling import Policy, parse_limits
from pipeline.settings import Settings

STATE_EVERY_S = 2.0


@dataclass
class ScalingLoop:
    supervisor: Supervisor
    channel: ControlChannel
    autoscaler: Autoscaler | None
    last_state: float = 0.0

    @classmethod
    def start(
        cls, settings: Settings, supervisor: Supervisor, args: argparse.Namespace, stop: threading.Event
    ) -> ScalingLoop:
        """The channel always; with ``--autoscale`` also the autoscaler's thread."""
        partitions = partitions_of(settings)
        channel = ControlChannel(supervisor, partitions)
        autoscaler = None
        if getattr(args, "autoscale", False):
            try:
                limits = parse_limits(args.max)
            except ValueError as exc:
                from pipeline.errors import ConfigError

                raise ConfigError(f"--max: {exc}") from exc
            policy = Policy(target_drain_s=args.target_drain, max_members=limits)
            autoscaler = Autoscaler(
                settings,
                counts=lambda: dict(supervisor.counts),
                resize=supervisor.resize,
                policy=policy,
                log_path=supervisor.log_dir / "autoscale.jsonl",
                interval_s=args.autoscale_interval,
                advice_url=getattr(args, "advice", None),
                caps=partitions,
            )
            threading.Thread(target=autoscaler.run, args=(stop,), name="autoscale", daemon=True).start()
            source = f"following {autoscaler.advice_url}" if autoscaler.advice_url else "deciding here"
            print(f"pipeline up: autoscaling ({source}) every {args.autoscale_interval:.0f} s (decisions in "
                  f"{supervisor.log_dir / 'autoscale.jsonl'}); limits: {limits or 'partitions'}")  # fmt: skip
        loop = cls(supervisor, channel, autoscaler)
        write_state(supervisor)
        return loop

    def poll(self) -> None:
        """One turn: apply a `pipeline scale` request if one came; refresh members.json now and then."""
        applied = self.channel.poll()
        if applied and self.autoscaler is not None:
            for stage in applied:
                self.autoscaler.told(stage, time.monotonic())
        now = time.monotonic()
        if applied is None and now - self.last_state >= STATE_EVERY_S:
            write_state(self.supervisor, **self.channel.answer)
            self.last_state = now
