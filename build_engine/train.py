"""Train the UNet on the synthetic salt set (or a user's images/ + masks/ folder)."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from runtime.data.images import load_folder, load_mask, read_image
from runtime.errors import UserError
from runtime.files import atomic_output, atomic_write_text, check_writable_file
from runtime.metrics import dice_from_iou, pooled_iou
from runtime.preprocess import InputSpec, preprocess_batch
from runtime.data.synthetic import SaltScene, make_dataset, sample_seed


@dataclass
class TrainConfig:
    size: int = 128
    channels: int = 1
    start_neurons: int = 16
    train_count: int = 800
    val_count: int = 200
    epochs: int = 40
    batch_size: int = 8
    learning_rate: float = 3e-3
    lr_decay: float = 0.7  # per epoch
    patience: int = 4
    max_minutes: float = 4.5
    seed: int = 0
    data: str | None = None  # a folder with images/ and masks/; None = synthetic
    val_fraction: float = 0.15


def load_training_data(cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_val, y_val) as NHWC float32, preprocessed by the runtime's function."""
    spec = InputSpec(cfg.size, cfg.size, cfg.channels)
    if cfg.data is None:  # the training batches are rendered per epoch (fresh_synthetic_batches); a few here for shape
        images, masks = make_dataset(min(cfg.train_count, cfg.batch_size), cfg.size, split="train", seed=cfg.seed)
        val_images, val_masks = make_dataset(cfg.val_count, cfg.size, split="val", seed=cfg.seed)
    else:
        image_paths, mask_paths = load_folder(cfg.data)
        if len(image_paths) < 10:
            raise UserError(f"{cfg.data} has {len(image_paths)} image/mask pairs; at least 10 are needed to train and validate")
        images = [read_image(p) for p in image_paths]
        masks = np.stack([load_mask(p, cfg.size, cfg.size) for p in mask_paths])
        if not masks.any():
            raise UserError(f"all {len(masks)} masks in {cfg.data} are empty (no salt pixel): the model would learn to "
                            "predict nothing and its validation IoU would read 1.0; check the masks folder")
        order = np.random.default_rng(cfg.seed).permutation(len(images))
        n_val = max(2, int(round(cfg.val_fraction * len(images))))
        val_idx, train_idx = order[:n_val], order[n_val:]
        val_images, val_masks = [images[i] for i in val_idx], masks[val_idx]
        images, masks = [images[i] for i in train_idx], masks[train_idx]
        if not val_masks.any():
            print(f"warning: the {n_val} validation masks are all empty, so validation IoU says little; "
                  "try another --seed or add images with salt", file=sys.stderr)

    def nhwc(frames):
        return preprocess_batch(frames, spec).transpose(0, 2, 3, 1).copy()

    return nhwc(images), masks[..., None].astype(np.float32), nhwc(val_images), val_masks[..., None].astype(np.float32)


def fresh_synthetic_batches(cfg: TrainConfig):
    """Synthetic training data rendered anew every epoch (seeded): the network never sees an image
    twice, so it cannot memorize the random textures. Same preprocessing as everything else."""
    import keras

    spec = InputSpec(cfg.size, cfg.size, cfg.channels)

    class FreshSaltBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.epoch = 0

        def __len__(self):
            return cfg.train_count // cfg.batch_size

        def __getitem__(self, index):
            first = self.epoch * cfg.train_count + index * cfg.batch_size
            pairs = [SaltScene(cfg.size, cfg.size, sample_seed("train", i, cfg.seed)).render()
                     for i in range(first, first + cfg.batch_size)]
            x = preprocess_batch([p[0] for p in pairs], spec).transpose(0, 2, 3, 1)
            return x, np.stack([p[1] for p in pairs])[..., None].astype(np.float32)

        def on_epoch_end(self):
            self.epoch += 1

    return FreshSaltBatches()


def dice_bce_loss(y_true, y_pred):
    """Binary cross-entropy plus soft Dice: the Dice term keeps small salt bodies from vanishing."""
    from keras import losses, ops

    bce = losses.binary_crossentropy(y_true, y_pred)
    intersection = ops.sum(y_true * y_pred)
    dice = (2.0 * intersection + 1.0) / (ops.sum(y_true) + ops.sum(y_pred) + 1.0)
    return ops.mean(bce) + (1.0 - dice)


def save_model(model, out_path: Path) -> None:
    """Through a temporary file: a failed or interrupted save leaves the previous model in place."""
    with atomic_output(out_path) as tmp:
        model.save(tmp)


def check_training_output(cfg: TrainConfig, out_path: Path) -> None:
    """Checked before any work: the model can be written where asked, and training would train."""
    if out_path.suffix not in (".keras", ".h5"):
        raise UserError(f"--out {out_path}: Keras saves models as .keras (or legacy .h5) files")
    check_writable_file(out_path, "--out")
    if cfg.epochs < 1:
        raise UserError(f"epochs must be >= 1, not {cfg.epochs}: the previous model at {out_path} is kept")


def compiled_unet(cfg: TrainConfig):
    """The article's UNet, seeded, with the loss and the IoU metric training reports."""
    import keras

    from build_engine.unet import make_unet

    keras.utils.set_random_seed(cfg.seed)
    model = make_unet(cfg.size, cfg.size, cfg.channels, cfg.start_neurons)
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate),
        loss=dice_bce_loss,
        metrics=[keras.metrics.BinaryIoU(target_class_ids=[1], threshold=0.5, name="iou")],
    )
    return model


def training_callbacks(cfg: TrainConfig) -> list:
    """Dice in the log, early stopping on validation IoU, the LR decay and the time budget."""
    import keras

    deadline = time.time() + cfg.max_minutes * 60

    class TimeBudget(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if time.time() > deadline:
                print(f"time budget of {cfg.max_minutes:g} min reached after epoch {epoch + 1}", flush=True)
                self.model.stop_training = True

    class DiceLog(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs and "val_iou" in logs:
                logs["val_dice"] = dice_from_iou(float(logs["val_iou"]))

    return [
        DiceLog(),
        keras.callbacks.EarlyStopping(monitor="val_iou", mode="max", patience=cfg.patience, restore_best_weights=True),
        # A steady decay, not ReduceLROnPlateau: without BatchNorm and with 0.5 dropout, the
        # validation IoU at lr 3e-3 swings by 0.2 between epochs, so plateau detection fires late.
        keras.callbacks.LearningRateScheduler(lambda epoch: cfg.learning_rate * cfg.lr_decay ** epoch),
        TimeBudget(),
    ]


def train(cfg: TrainConfig, out_path: str | Path) -> dict:
    """Fit, keep the best epoch by validation IoU, save the model and `<name>.history.json`."""
    out_path = Path(out_path)
    check_training_output(cfg, out_path)
    t0 = time.time()
    x_train, y_train, x_val, y_val = load_training_data(cfg)
    print(f"data: {len(x_train)} train / {len(x_val)} val images at {cfg.size}x{cfg.size}x{cfg.channels} ({time.time() - t0:.1f} s)", flush=True)
    model = compiled_unet(cfg)
    callbacks = training_callbacks(cfg)
    fit_start = time.time()
    verbose = 1 if sys.stdout.isatty() else 2
    if cfg.data is None:
        history = model.fit(fresh_synthetic_batches(cfg), validation_data=(x_val, y_val), epochs=cfg.epochs,
                            callbacks=callbacks, verbose=verbose)
    else:
        history = model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=cfg.epochs, batch_size=cfg.batch_size,
                            shuffle=True, callbacks=callbacks, verbose=verbose)
    fit_seconds = time.time() - fit_start

    # Final figures from the restored (best) weights, with the same pooled IoU as during training.
    probabilities = model.predict(x_val, batch_size=32, verbose=0)
    val_iou = pooled_iou(probabilities > 0.5, y_val > 0.5)
    save_model(model, out_path)
    record = {
        "config": asdict(cfg),
        "epochs_run": len(history.history["loss"]),
        "fit_seconds": round(fit_seconds, 1),
        "history": {k: [round(float(v), 5) for v in vals] for k, vals in history.history.items()},
        "final": {"val_iou": round(val_iou, 4), "val_dice": round(dice_from_iou(val_iou), 4)},
        "model": str(out_path),
    }
    history_path = out_path.with_suffix(".history.json")
    atomic_write_text(history_path, json.dumps(record, indent=2))
    print(f"saved {out_path}: val IoU {val_iou:.4f}, Dice {dice_from_iou(val_iou):.4f} after {record['epochs_run']} epochs in {fit_seconds:.0f} s; history in {history_path}")
    return record
