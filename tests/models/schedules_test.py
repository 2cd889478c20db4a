"""Tests of keras_dib.models.schedules and the stage API of the model."""

import keras
import numpy as np

from keras_dib.models import schedules
from keras_dib.testing import TestCase
from tests.models.greedy_test import _compile
from tests.models.greedy_test import _data
from tests.models.greedy_test import _model
from tests.models.greedy_test import _snapshot


class LastBlockOnly(schedules.Schedule):
    """A schedule defined outside the library: trains the last block only,
    for a given number of epochs, with every earlier block frozen."""

    name = "last_block_only"

    def stages(self, model, epochs):
        last = model.num_blocks - 1
        return [schedules.Stage(0, last, int(epochs), "last block")]

    def set_trainable(self, model, stage):
        for index, (block, head) in enumerate(
            zip(model.blocks, model.training_heads)
        ):
            block.trainable = head.trainable = index == stage.block

    def forward(self, model, inputs, stage, training, **kwargs):
        return schedules.sequential_forward(
            model, inputs, stage, training, **kwargs
        )


class SchedulesTest(TestCase):
    def test_a_schedule_defined_in_a_test_file(self):
        model = _model()
        _compile(model)
        x, y = _data()
        before = _snapshot(model.blocks + model.training_heads)
        history = model.fit(
            x, y, batch_size=16, epochs=2, schedule=LastBlockOnly(), verbose=0
        )
        self.assertEqual(history.history["block"], [2, 2])
        self.assertEqual(history.params["schedule"], "last_block_only")
        self.assertIn("compression", history.history)
        after = _snapshot(model.blocks + model.training_heads)
        changed = [
            not all(np.array_equal(a, b) for a, b in zip(old, new))
            for old, new in zip(before, after)
        ]
        # Blocks 0-2, then heads 0-2: only block 2 and the real head moved.
        self.assertEqual(changed, [False, False, True, False, False, True])
        self.assertIsNone(model.stage)

    def test_get(self):
        self.assertIsInstance(schedules.get("sequential"), schedules.Sequential)
        schedule = LastBlockOnly()
        self.assertIs(schedules.get(schedule), schedule)
        with self.assertRaisesRegex(ValueError, "Received: schedule='greedy'"):
            schedules.get("greedy")

    def test_stages(self):
        model = _model()
        stages = schedules.get("sequential").stages(model, [1, 0, 2])
        self.assertEqual([s.block for s in stages], [0, 1, 2])
        self.assertEqual([s.epochs for s in stages], [1, 0, 2])
        for name in ("simultaneous", "end_to_end"):
            (stage,) = schedules.get(name).stages(model, 3)
            self.assertIsNone(stage.block)
            self.assertEqual(stage.epochs, 3)
            with self.assertRaisesRegex(ValueError, "Received: epochs=-1"):
                schedules.get(name).stages(model, -1)
        with self.assertRaisesRegex(ValueError, r"Received: epochs=\[1, 2\]"):
            schedules.get("sequential").stages(model, [1, 2])

    def test_enter_and_exit_stage(self):
        model = _model()
        _compile(model)
        model.blocks[2].trainable = False
        x, y = _data(16)
        stage = model.enter_stage("sequential", block=1)
        self.assertEqual(
            (model.schedule, model.active_block), ("sequential", 1)
        )
        self.assertIs(model.stage, stage)
        self.assertEqual(
            [b.trainable for b in model.blocks], [False, True, False]
        )
        names = [m.name for m in model.metrics]
        self.assertIn("cross_entropy", names)
        self.assertIn("compression", names)
        logs = model.train_on_batch(x, y, return_dict=True)
        self.assertAllFinite(logs["compression"])
        model.exit_stage()
        self.assertIsNone(model.stage)
        # The flags from before the first enter_stage are back.
        self.assertEqual(
            [b.trainable for b in model.blocks], [True, True, False]
        )
        self.assertNotIn("compression", [m.name for m in model.metrics])
        self.assertEqual(tuple(model(x[:2]).shape), (2, 3))

    def test_enter_stage_bad_block(self):
        model = _model()
        _compile(model)
        with self.assertRaisesRegex(ValueError, "Received: block=3"):
            model.enter_stage("sequential", block=3)
        with self.assertRaisesRegex(ValueError, "Received: block=None"):
            model.enter_stage("sequential")
        with self.assertRaisesRegex(ValueError, "Received: block=0"):
            model.enter_stage("end_to_end", block=0)
        self.assertIsNone(model.stage)

    def test_serialization(self):
        for schedule in schedules.SCHEDULES.values():
            restored = keras.saving.deserialize_keras_object(
                keras.saving.serialize_keras_object(schedule)
            )
            self.assertEqual(restored, schedule)
