"""Guide — dlkit from Python, the Keras way.

Run it:  .venv/bin/python tutorials/guide_keras_style.py
(the tests run it too, with DLKIT_TUTORIAL_EPOCHS=1 to keep CI short).

We train LeNet-5 on scikit-learn's handwritten digits, look at the model, evaluate,
predict, then freeze the convolutions and fine-tune only the head on a new task.
"""

import os

import lightning as L
import torch

from dlkit import Classifier, callbacks, create_model
from dlkit.data import DigitsDataModule

EPOCHS = int(os.environ.get("DLKIT_TUTORIAL_EPOCHS", 20))
L.seed_everything(0)

# 1. Data: 1,797 8x8 digits shipped with scikit-learn, resized to LeNet's 32x32 input.
data = DigitsDataModule(resize=32, batch_size=64)

# 2. A model from the registry, wrapped in a task, compiled like a Keras model.
net = create_model("lenet5", num_classes=10, in_chans=1, variant="modern")
clf = Classifier(net)
clf.compile(optimizer="adam", lr=3e-3, scheduler="cosine", metrics=["accuracy", "f1"])
clf.summary()  # layers, output shapes, trainable / non-trainable parameters

# 3. fit returns a History of per-epoch metrics; early stopping can restore the best epoch.
stopper = callbacks.EarlyStopping(monitor="val/acc", mode="max", patience=5, restore_best_weights=True)
history = clf.fit(data, epochs=EPOCHS, callbacks=[stopper], verbose=False)
print(f"epochs run: {len(history.epoch)}, best val/acc: {max(history.history['val/acc']):.4f}")

# 4. evaluate on the test split, predict class probabilities.
print("test:", clf.evaluate(data))
probs = clf.predict(data)  # (N, 10), each row sums to 1
print("first predictions:", probs.argmax(1)[:10].tolist())

# 5. Fine-tuning with frozen layers: a new task ("is the digit >= 5?") reusing the
#    learned convolutions. reset_classifier gives a fresh head; freezing is requires_grad.
net.reset_classifier(2)
for p in net.features.parameters():
    p.requires_grad_(False)
summary = clf.summary()
assert summary.non_trainable_params > 0

data.setup("fit")
x_train, y_train = data.splits["train"]
x_test, y_test = data.splits["test"]
ft = Classifier(net).compile(optimizer="adam", lr=3e-3)
ft.fit(x_train, (y_train >= 5).long(), epochs=max(1, EPOCHS // 4), validation_split=0.1, verbose=False)
print("fine-tuned head, test:", ft.evaluate(x_test, (y_test >= 5).long()))
frozen_changed = any(p.grad is not None for p in net.features.parameters())
print("frozen convolutions received gradients:", frozen_changed)
assert not frozen_changed and isinstance(probs, torch.Tensor)
