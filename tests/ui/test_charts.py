from ui.charts import has_curves, training_curves


def _stage(stage, total, steps, val):
    evs = [{"stage": stage, "kind": "batch_end", "step": s, "total_steps": total, "loss": 1.0 / s, "accuracy": 0.5}
           for s in steps]
    return evs + [{"stage": stage, "kind": "epoch_end", "step": total, "total_steps": total, "loss": 0.2,
                   "accuracy": 0.6, "val_accuracy": val, "epoch": 1}]


def test_single_stage_curves_span_the_whole_run():
    fig = training_curves(_stage("train", 100, [20, 40], 0.7))
    loss = next(t for t in fig.data if t.name == "train loss")
    assert list(loss.x) == [20, 40]
    assert list(fig.layout.xaxis.range) == [0, 100]


def test_stages_are_laid_end_to_end():
    events = _stage("fine-tune 1/2", 50, [20, 40], 0.8) + _stage("fine-tune 2/2", 50, [20, 40], 0.85)
    assert has_curves(events)
    fig = training_curves(events)
    loss = next(t for t in fig.data if t.name == "train loss")
    assert list(loss.x) == [20, 40, 70, 90]
    val = next(t for t in fig.data if t.name == "validation accuracy")
    assert list(val.x) == [50, 100] and list(val.y) == [0.8, 0.85]
    assert any(shape.x0 == 50 for shape in fig.layout.shapes)   # the stage boundary
