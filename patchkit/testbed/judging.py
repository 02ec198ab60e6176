"""The testbed's judges as one panel: every category of the testbed world, from the shipped folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from patchkit.evaluation.classifier_net import ClassifierPanel
from patchkit.testbed import world
from patchkit.testbed.paths import TESTBED_JUDGES


class JudgePanel(ClassifierPanel):
    @classmethod
    def load(cls, folder: Path = TESTBED_JUDGES, categories: Sequence[str] = world.CATEGORIES) -> JudgePanel:
        panel = ClassifierPanel.load(folder, categories)
        return cls(panel.judges)
