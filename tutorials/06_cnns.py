# %% [markdown]
# # Chapter 6 — Convolutional networks, from LeNet-5 to SE-ResNet
#
# A fully connected layer gives every pixel its own weight for every output, so it ignores
# that images are made of local patterns that can appear anywhere. A *convolution* slides
# one small kernel over the whole image instead: the same few weights are reused at every
# position (weight sharing), each output looks only at a small window (local
# connectivity), and a shifted input gives a shifted output. This chapter first computes a
# convolution, padding, stride and pooling by hand on a small digit and checks the numbers
# against PyTorch's layers (which dlkit's models use). Then it trains six famous
# architectures on Fashion-MNIST with dlkit's model registry and compares their accuracy,
# size and speed, and finally looks at what LeNet-5's first layer has learned.
#
# You will learn:
#
# - what a convolution computes, and how padding and stride set the output size;
# - what max- and average-pooling do;
# - the one idea each of LeNet-5, AlexNet, VGG, GoogLeNet, ResNet and SE-ResNet added;
# - how to read a network's first-layer feature maps.

# %%
import os
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures go to files; works without a display
import lightning as L
import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F

from dlkit import Classifier, create_model
from dlkit.data import DigitsDataModule, FashionMNISTDataModule

SMALL = os.environ.get("DLKIT_TUTORIAL_BUDGET", "full") == "small"
try:
    FIGURES = Path(os.environ.get("DLKIT_TUTORIAL_FIGURES", Path(__file__).resolve().parent / "figures"))
except NameError:  # in Jupyter there is no __file__
    FIGURES = Path(os.environ.get("DLKIT_TUTORIAL_FIGURES", "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)
WORK = Path(tempfile.mkdtemp(prefix="dlkit_ch06_"))  # anything Lightning writes lands here
L.seed_everything(0, verbose=False)
# One thread: on a machine shared with other jobs, two threads per process mostly wait
# for each other (a ResNet step ran 2.5x faster with one thread here).
torch.set_num_threads(1)

# %% [markdown]
# ## 1. A convolution by hand
#
# A 2-D convolution (strictly a cross-correlation, as in every deep-learning library: the
# kernel is not flipped) places a `k x k` kernel on a `k x k` window of the image, multiplies
# element by element and sums; that number is one output pixel. Moving the window one step
# right or down gives the next. With input side `n`, padding `p` (zeros added around the
# border) and stride `s` (the step of the window) the output side is
#
# `out = floor((n + 2p - k) / s) + 1`.
#
# Padding `p = (k - 1) / 2` with stride 1 keeps the size ("same" convolution); stride 2
# halves it. We take an 8x8 handwritten digit from scikit-learn and a 3x3 Sobel kernel,
# which responds to vertical edges (bright on the left, dark on the right gives a positive
# value), and write the sliding window as two loops.

# %%
digits = DigitsDataModule(resize=None)
digits.setup("fit")
x_digits, y_digits = digits.splits["train"]
image = x_digits[0, 0]  # (8, 8), pixels in [0, 1]
print(f"digit label: {int(y_digits[0])}, image shape: {tuple(image.shape)}")

sobel = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])


def conv2d_by_hand(x, kernel, stride=1, padding=0):
    """Slide ``kernel`` over the 2-D image ``x``: multiply the window element-wise and sum."""
    n, k = x.shape[0], kernel.shape[0]
    padded = torch.zeros(n + 2 * padding, n + 2 * padding)
    padded[padding:padding + n, padding:padding + n] = x  # zeros around the border
    side = (n + 2 * padding - k) // stride + 1
    out = torch.zeros(side, side)
    for i in range(side):
        for j in range(side):
            window = padded[i * stride:i * stride + k, j * stride:j * stride + k]
            out[i, j] = (window * kernel).sum()
    return out


def pool2d_by_hand(x, size=2, reduce=torch.max):
    """Non-overlapping pooling: one number (the max or the mean) per ``size x size`` block."""
    side = x.shape[0] // size
    out = torch.zeros(side, side)
    for i in range(side):
        for j in range(side):
            out[i, j] = reduce(x[i * size:(i + 1) * size, j * size:(j + 1) * size])
    return out


# %% [markdown]
# Now the same computations with PyTorch's layers: `nn.Conv2d` with our kernel as its only
# weight, `nn.MaxPool2d` and `nn.AvgPool2d`. Layers work on batches of shape
# `(batch, channels, height, width)`, hence the `[None, None]`. The last check is the trick
# fast implementations use: `F.unfold` cuts out every window as a column (im2col), so the
# whole convolution becomes one matrix product.

# %%
batch = image[None, None]  # (1, 1, 8, 8)
for stride, padding in [(1, 0), (1, 1), (2, 1)]:
    layer = nn.Conv2d(1, 1, kernel_size=3, stride=stride, padding=padding, bias=False)
    with torch.no_grad():
        layer.weight.copy_(sobel[None, None])
        ours, theirs = conv2d_by_hand(image, sobel, stride, padding), layer(batch)[0, 0]
    print(f"conv stride {stride} padding {padding}: output side {ours.shape[0]}, "
          f"max difference to nn.Conv2d: {(ours - theirs).abs().max().item():.2e}")

edges = conv2d_by_hand(image, sobel, padding=1)  # (8, 8)
with torch.no_grad():
    pools = [("max", torch.max, nn.MaxPool2d(2), "nn.MaxPool2d"), ("average", torch.mean, nn.AvgPool2d(2), "nn.AvgPool2d")]
    for name, reduce, layer, layer_name in pools:
        ours, theirs = pool2d_by_hand(edges, 2, reduce), layer(edges[None, None])[0, 0]
        print(f"{name} pool 2x2: output side {ours.shape[0]}, "
              f"max difference to {layer_name}: {(ours - theirs).abs().max().item():.2e}")
    columns = F.unfold(batch, kernel_size=3)  # (1, 9, 36): one column per window
    as_matmul = (sobel.flatten() @ columns[0]).reshape(6, 6)
    print(f"unfold + matrix product: max difference to the loops: "
          f"{(as_matmul - conv2d_by_hand(image, sobel)).abs().max().item():.2e}")

# %%
fig, axes = plt.subplots(1, 4, figsize=(15, 3.6), layout="constrained")
panels = [
    (image, "input digit (8x8)", "gray"),
    (sobel, "Sobel kernel (3x3)", "coolwarm"),
    (edges, "convolution, padding 1 (8x8)", "coolwarm"),
    (pool2d_by_hand(edges, 2), "max-pool 2x2 (4x4)", "coolwarm"),
]
for ax, (values, title, cmap) in zip(axes, panels):
    lim = values.abs().max().item()
    shown = ax.imshow(values, cmap=cmap, vmin=0 if cmap == "gray" else -lim, vmax=lim)
    if values.shape[0] <= 4:  # small arrays: write the numbers in
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", fontsize=8)
    ax.set_title(title)
    ax.set_xticks(range(values.shape[1]))
    ax.set_yticks(range(values.shape[0]))
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    fig.colorbar(shown, ax=ax, fraction=0.046, label="value")
fig.suptitle("A vertical-edge kernel slid over a digit, then max-pooled (computed by hand)")
fig.savefig(FIGURES / "06_conv_by_hand.png", dpi=110, bbox_inches="tight")
plt.close(fig)

# %% [markdown]
# The differences are zero: the loops and the layers compute the same numbers. The edge
# map is positive on the right flank of every stroke (bright on the left, dark on the right)
# and negative on its left flank. Max-pooling keeps the strongest response of every 2x2
# block: a quarter of the numbers, which say *whether* an edge is in a block rather than
# exactly where.
#
# ## 2. Six architectures, one idea each
#
# - **LeNet-5** (1998): two convolution + pooling stages, then three fully connected layers;
#   62 thousand parameters (dlkit's `modern` variant uses ReLU and max-pooling).
# - **AlexNet** (2012): the same recipe, much bigger — five convolutions, ReLU, dropout in a
#   wide classifier; most of its weights sit in the fully connected layers.
# - **VGG** (2014): only 3x3 convolutions, stacked in blocks between poolings; two 3x3 layers
#   see a 5x5 window with fewer weights and one more non-linearity. `vgg11_bn` adds
#   batch normalisation.
# - **GoogLeNet** (2014): *Inception* blocks run 1x1, 3x3, 5x5 convolutions and a pooling in
#   parallel and concatenate them; 1x1 convolutions shrink the channels first, which keeps
#   the cost down.
# - **ResNet** (2015): every block adds its input to its output, `y = x + F(x)`, so the
#   gradient has a short path back and networks of 18 to 152 layers train.
# - **SE-ResNet** (2017): a *squeeze-and-excitation* unit averages each channel over the
#   image, and a tiny two-layer network turns these averages into one weight per channel
#   that rescales the block's output (channel attention).
#
# All of them come from `dlkit.create_model` by registry name. The configs in
# `conf/experiment/*_fashion.yaml` show how each is fitted to 28x28 one-channel images:
# `in_chans=1`, `small_input=True` for VGG and the ResNets (a 3x3 stride-1 stem instead of
# the ImageNet 7x7 stride-2 one and max-pool, so a small image is not shrunk away), and a
# resize where the architecture needs a minimum size (AlexNet needs 63 px). Here AlexNet's
# two hidden fully connected layers have 512 units instead of 4,096 (`hidden_size=512`).
#
# The budget is minutes on two CPU cores, so everything is scaled down: a stratified subset
# of the training images, 2,000 of the test images, **one epoch** per model, no
# augmentation, AdamW with the learning rates of the experiment configs, GoogLeNet and the
# ResNets at the stored 28x28 px, VGG-11 at 16x16 px (at 32 px a training step cost 28 ms per
# image, six times more than at 16 px), and both ResNets at a quarter of their
# width (`stem_width=16`: 16-32-64-128 channels instead of 64-128-256-512; the full-width
# ResNet-18 took 28 minutes per epoch of all 55,000 images on this machine). **These are
# few-epoch numbers, not the architectures' best**: the large models have seen each image
# once, and the experiment configs train for 10-20 epochs on all the data.

# %%
N_TRAIN, N_TEST, EPOCHS = (200, 200, 1) if SMALL else (3000, 2000, 1)
# label, registry name, model arguments, input side (px), learning rate
MODELS = [
    ("LeNet-5", "lenet5", {"variant": "modern"}, 32, 3e-3),
    ("AlexNet", "alexnet", {"hidden_size": 512}, 64, 1e-4),
    ("VGG-11-BN", "vgg11_bn", {"small_input": True}, 16, 1e-3),
    ("GoogLeNet", "googlenet", {}, 28, 2e-3),
    ("ResNet-18/4", "resnet18", {"small_input": True, "stem_width": 16}, 28, 2e-3),
    ("SE-ResNet-18/4", "seresnet18", {"small_input": True, "stem_width": 16}, 28, 2e-3),
]
# The small budget (CI) trains two models; the others are built and run one training batch.
TRAINED = {"lenet5", "resnet18"} if SMALL else {name for _, name, *_ in MODELS}
print(f"training images: {N_TRAIN}, test images: {N_TEST}, epochs: {EPOCHS}")



def fashion_subset(side):
    """The same N_TRAIN training images (stratified) and first N_TEST test images, resized to ``side``."""
    data = FashionMNISTDataModule(num_train=N_TRAIN, val_size=0, resize=None if side == 28 else side,
                                  batch_size=64, augment=False)
    data.setup("fit")
    x_test, y_test = data.splits["test"]
    data.splits["test"] = (x_test[:N_TEST], y_test[:N_TEST])
    return data


results, nets, datamodules = [], {}, {}
for label, name, kwargs, side, lr in MODELS:
    L.seed_everything(0, verbose=False)
    if side not in datamodules:
        datamodules[side] = fashion_subset(side)
    data = datamodules[side]
    net = create_model(name, num_classes=10, in_chans=1, **kwargs)
    clf = Classifier(net).compile(optimizer="adamw", lr=lr, metrics=["accuracy"])
    params = clf.summary(input_size=(1, 1, side, side), print_fn=lambda line: None).total_params
    if name not in TRAINED:
        clf.fit(data, epochs=1, verbose=False, default_root_dir=WORK, limit_train_batches=1)
        print(f"{label}: built, one training batch ran, parameters: {params}")
        continue
    start = time.perf_counter()
    clf.fit(data, epochs=EPOCHS, verbose=False, default_root_dir=WORK)
    seconds = (time.perf_counter() - start) / EPOCHS
    acc = clf.evaluate(data, default_root_dir=WORK)["acc"]
    results.append((label, side, params, acc, seconds))
    nets[name] = (net, data)
    print(f"{label}: test accuracy: {acc:.4f}, parameters: {params}, input: {side} px, "
          f"seconds per epoch: {seconds:.1f}")

# %%
print("| model | input | parameters | test accuracy | s / epoch |")
print("|---|---|---|---|---|")
for label, side, params, acc, seconds in results:
    print(f"| {label} | {side} px | {params / 1e6:.2f} M | {acc:.4f} | {seconds:.1f} |")

fig, ax = plt.subplots(figsize=(9, 4.8))
for k, (label, side, params, acc, seconds) in enumerate(results):
    ax.scatter(params, acc, s=30 + 4 * seconds, alpha=0.7, label=f"{label}: {acc:.3f}, {seconds:.0f} s/epoch")
    ax.annotate(label, (params, acc), textcoords="offset points", xytext=(8, 8 if k % 2 else -12), fontsize=9)
ax.set_xscale("log")
ax.set_xlabel("parameters (log scale)")
ax.set_ylabel(f"test accuracy ({N_TEST} images)")
ax.set_title(f"Fashion-MNIST, {N_TRAIN} training images, {EPOCHS} epoch (marker area ~ time)")
ax.grid(alpha=0.3)
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="model: accuracy, time")
fig.savefig(FIGURES / "06_accuracy_vs_params.png", dpi=110, bbox_inches="tight")
plt.close(fig)

# %% [markdown]
# Measured on AMD EPYC, 2 cores, 2026-12-02, full budget (3,000 training images, the first
# 2,000 test images, one epoch, one PyTorch thread; times per epoch, machine shared with
# other jobs; the whole chapter ran in 1 min 34 s):
#
# | model | input | parameters | test accuracy | s / epoch |
# |---|---|---|---|---|
# | LeNet-5 | 32 px | 0.06 M | 0.6960 | 0.6 |
# | AlexNet (512-unit classifier) | 64 px | 7.44 M | 0.4815 | 9.2 |
# | VGG-11-BN | 16 px | 9.76 M | 0.3555 | 16.8 |
# | GoogLeNet | 28 px | 5.60 M | 0.5705 | 15.8 |
# | ResNet-18, quarter width | 28 px | 0.70 M | 0.6760 | 15.3 |
# | SE-ResNet-18, quarter width | 28 px | 0.71 M | 0.7400 | 11.0 |
#
# After one pass over 3,000 images, size is no advantage: LeNet-5 (62 thousand parameters,
# under a second) is at 0.70, close to the residual networks, and the three big networks
# without residual connections — AlexNet, VGG-11, GoogLeNet, 5.6 to 9.8 million parameters —
# are far behind, with 47 optimiser steps to fit millions of weights. The residual networks
# are the best of this budget, SE-ResNet first at 0.74 for 1 % more parameters than
# ResNet-18. Again: these are few-epoch numbers, not the architectures' best. With the
# experiment configs (all the data, 10-20 epochs, augmentation) the ranking changes; try
# `dlkit-train experiment=resnet18_fashion` when you have the time. The times are noisy
# (ResNet-18 here took longer than SE-ResNet-18, which does strictly more work): other
# jobs shared the CPU.
#
# ## 3. What the first layer sees
#
# The first convolution of the trained LeNet-5 has six 5x5 kernels, so it turns one image
# into six *feature maps*. We pass one test image through that layer (and its ReLU) and
# show every map: each kernel has learned to respond to a different local pattern —
# edges of one orientation, bright regions, dark outlines.

# %%
net, data = nets["lenet5"]
net.eval()
x_one = data.eval_transforms(data.splits["test"][0][:1])  # (1, 1, 32, 32), normalised
with torch.no_grad():
    maps = net.features[:2](x_one)[0]  # conv + ReLU -> (6, 28, 28)
label_one = data.class_names[int(data.splits["test"][1][0])]
print(f"feature maps: {maps.shape[0]} of {maps.shape[1]}x{maps.shape[2]} for one {label_one} image")

fig, axes = plt.subplots(2, 7, figsize=(14, 4.4), layout="constrained")
axes[0, 0].imshow(x_one[0, 0], cmap="gray")
axes[0, 0].set_title(f"input: {label_one}")
kernels = net.features[0].weight.detach()[:, 0]  # (6, 5, 5)
axes[1, 0].axis("off")
for c in range(maps.shape[0]):
    axes[0, c + 1].imshow(maps[c], cmap="viridis")
    axes[0, c + 1].set_title(f"map {c}")
    lim = kernels[c].abs().max().item()
    axes[1, c + 1].imshow(kernels[c], cmap="coolwarm", vmin=-lim, vmax=lim)
    axes[1, c + 1].set_title(f"kernel {c} (5x5)")
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
axes[0, 0].set_ylabel("row")
axes[0, 0].set_xlabel("column")
fig.suptitle("LeNet-5's first convolution on one test image: feature maps (top, after ReLU) and kernels (bottom)")
fig.savefig(FIGURES / "06_lenet_feature_maps.png", dpi=110, bbox_inches="tight")
plt.close(fig)

# %% [markdown]
# ## Summary
#
# A convolution is a small weighted sum slid over the image; padding and stride set the
# output size, pooling summarises blocks. Every architecture since LeNet-5 keeps that
# core and adds one idea — depth and dropout, stacks of 3x3, parallel branches, residual
# additions, channel attention — and dlkit builds each from one registry name.
