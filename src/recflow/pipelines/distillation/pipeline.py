"""Distillation: teacher -> (cached logits) -> student with KD and the plain-student ablation -> report.

offline (default): build_teacher -> cache_teacher_logits (parquet, once) -> train_student_kd.
online: train_online trains teacher(s) and student together (teacher logits detached).
Both modes then train the plain student, evaluate the three (plus the LR baseline), export
the students through the export pipeline's node, and write distillation_report.json.
"""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Pipeline, node

from recflow.pipelines import with_entry_name
from recflow.pipelines.distillation import nodes

DATA = ["model_input_train", "model_input_valid", "feature_spec"]
PARAMS = "params:distillation"


def create_pipeline(mode: str = "offline", **kwargs: Any) -> Pipeline:
    """`mode` comes from parameters_distillation.yml (see `params.pipeline_kwargs`)."""
    if mode == "online":
        teacher = Pipeline([
            node(nodes.train_online, [*DATA, PARAMS],
                 ["distillation_student_kd", "distillation_student_kd_history",
                  "distillation_teacher", "distillation_teacher_history"],
                 name="distillation_train_online"),
        ])
    elif mode == "offline":
        teacher = Pipeline([
            node(nodes.build_teacher, [*DATA, PARAMS],
                 ["distillation_teacher", "distillation_teacher_history"],
                 name="distillation_build_teacher"),
            node(nodes.cache_teacher_logits,
                 ["distillation_teacher", "model_input_train", "feature_spec"],
                 "distillation_teacher_logits", name="distillation_cache_teacher_logits"),
            node(nodes.train_student_kd, [*DATA, "distillation_teacher_logits", PARAMS],
                 ["distillation_student_kd", "distillation_student_kd_history"],
                 name="distillation_train_student_kd"),
        ])
    else:
        raise ValueError(f"parameters_distillation.yml: unknown mode {mode!r}")
    test = ["model_input_test", "feature_spec", "params:export", PARAMS]
    rest = Pipeline([
        node(nodes.train_student_plain, [*DATA, PARAMS],
             ["distillation_student_plain", "distillation_student_plain_history"],
             name="distillation_train_student_plain"),
        node(nodes.baseline_row, ["model_input_train", "model_input_valid", "model_input_test",
                                  "feature_spec", PARAMS],
             "distillation_baseline_row", name="distillation_baseline"),
        node(nodes.evaluate_teacher, ["distillation_teacher", "distillation_teacher_history",
                                      *test], "distillation_teacher_row",
             name="distillation_evaluate_teacher"),
        *[node(with_entry_name(nodes.evaluate_student, f"distillation_{s}"), [f"distillation_{s}", f"distillation_{s}_history", *test],
               [f"distillation_{s}_onnx", f"distillation_{s}_row"],
               name=f"distillation_evaluate_{s}")
          for s in ("student_kd", "student_plain")],
        node(nodes.report_distillation,
             ["distillation_teacher_row", "distillation_student_kd_row",
              "distillation_student_plain_row", "distillation_baseline_row", PARAMS],
             "distillation_report", name="distillation_report"),
    ])
    return teacher + rest
