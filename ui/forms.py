"""Widget groups that return engine configs (the page then hands them to core)."""
from __future__ import annotations

import streamlit as st

from core.data import list_datasets
from core.models import list_models
from core.tasks import TrainJobConfig
from core.training import TrainConfig


def dataset_select(key: str, label: str = "Dataset", default: str = "fashion-mnist") -> str:
    infos = list_datasets()
    names = [d.name for d in infos]
    titles = {d.name: d.title for d in infos}
    return st.selectbox(label, names, index=names.index(default) if default in names else 0, key=key,
                        format_func=lambda n: titles[n],
                        help="; ".join(f"{d.title}: {d.description}" for d in infos))


def model_select(key: str, label: str = "Model", default: str = "lenet5") -> str:
    specs = list_models()
    names = [s.name for s in specs]
    desc = {s.name: s.description for s in specs}
    return st.selectbox(label, names, index=names.index(default) if default in names else 0, key=key,
                        format_func=lambda n: f"{n}: {desc[n]}")


def train_form(model: str, dataset: str, key: str = "train") -> TrainJobConfig | None:
    """Hyperparameters of a new baseline; returns a validated config when submitted, else None."""
    with st.form(key=f"{key}-form", border=True):
        c = st.columns(4)
        epochs = c[0].number_input("Epochs", min_value=1, max_value=200, value=3, step=1, key=f"{key}-epochs")
        subset = c[1].number_input("Training samples (0 = all)", min_value=0, max_value=1_000_000, value=0, step=500,
                                   key=f"{key}-subset",
                                   help="Train on a random subset for a quick run; validation and test stay whole.")
        batch = c[2].number_input("Batch size", min_value=1, max_value=4096, value=64, step=16, key=f"{key}-batch")
        seed = c[3].number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1, key=f"{key}-seed")
        c = st.columns(4)
        lr = c[0].number_input("Learning rate", min_value=1e-6, max_value=10.0, value=0.05, step=0.01, format="%.4f",
                               key=f"{key}-lr")
        optimizer = c[1].selectbox("Optimizer", ["sgd", "adam", "adamw"], key=f"{key}-opt",
                                   help="SGD with Nesterov momentum 0.9, or Adam/AdamW; cosine learning-rate decay")
        name = c[2].text_input("Name (optional)", key=f"{key}-name", placeholder=f"{model} ({dataset})")
        c[3].write("")
        submitted = st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:")
    if not submitted:
        return None
    try:
        return TrainJobConfig(model=model, dataset=dataset, subset=int(subset) or None, name=name.strip() or None,
                              train=TrainConfig(epochs=int(epochs), batch_size=int(batch), lr=float(lr),
                                                optimizer=optimizer, seed=int(seed)))
    except ValueError as e:
        st.error(f"Cannot start: {e}")
        return None
