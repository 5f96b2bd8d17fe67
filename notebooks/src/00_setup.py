# %% [markdown]
# # 00 · Set-up: is everything in place?
#
# This short notebook checks your environment before the course starts. It shows
#
# - which **profile** is active (`smoke`, `class` or `paper`) and what it means,
# - which **device** PyTorch will use,
# - that the **data** loads and looks right.
#
# Choose the profile in the **first code cell** of every notebook (`S2O_PROFILE = "class"`), or with the
# environment variable `S2O_PROFILE` before starting Jupyter (`S2O_PROFILE=class jupyter lab`). Left empty, you
# get `class` on a GPU and `smoke` on a CPU. The same cell makes `import s2o_lib` work — on Colab by cloning the
# repository, locally by using your checkout — and `s2o_lib.suite.notebook_setup.set_up` does the rest.

# %%
import platform

import matplotlib.pyplot as plt
import torch

import s2o_lib
from s2o_lib.config import get_device, get_profile, seed_everything
from s2o_lib.data import dataset_info, make_loader
from s2o_lib.zoo import profile_data

# %% [markdown]
# ## Versions and device
# Timings and devices differ between machines, so this cell's output is not compared by the tests.

# %% tags=["nbval-ignore-output"]
device = get_device()
print(f"python {platform.python_version()}, torch {torch.__version__}, s2o_lib {s2o_lib.__version__}")
print("device:", device, f"({torch.cuda.get_device_name()})" if device.type == "cuda" else "")

# %% [markdown]
# ## The profile
# One place, `s2o_lib.config`, maps the profile to every size the notebooks use.

# %%
profile = get_profile()
print(f"profile: {profile.name}")
print(f"dataset {profile.dataset}, model {profile.arch}, {profile.epochs} epochs, batch {profile.batch_size}")
print(f"threat model: L-inf eps = {profile.eps:.4f}; training attack PGD-{profile.attack_steps}")
print(profile.notes)

# %% [markdown]
# ## A batch of data
# Images are tensors in $[0, 1]$ of shape (batch, channels, height, width). Normalisation, where a model
# wants it, happens inside the model, so attacks always work in pixel space.

# %%
seed_everything(0)
info = dataset_info(profile.dataset)
train, test = profile_data(profile)  # class and paper download CIFAR-10 on the first run (about 170 MB)
x, y = next(iter(make_loader(train, batch_size=16, shuffle=True, seed=0)))
print(f"{len(train)} training and {len(test)} test images, {info.num_classes} classes")
print("batch:", tuple(x.shape), x.dtype, f"values in [{x.min():.2f}, {x.max():.2f}]")

# %%
assert x.min() >= 0 and x.max() <= 1, "images must lie in [0, 1]"
assert x.shape[1:] == (info.in_channels, info.image_size, info.image_size)
assert len(set(y.tolist())) > 1

# %%
fig, axes = plt.subplots(2, 8, figsize=(8, 2.4))
for ax, image, label in zip(axes.flat, x, y):
    ax.imshow(image.permute(1, 2, 0).squeeze(), cmap="gray")
    ax.set_title(int(label), fontsize=9)
    ax.axis("off")
fig.suptitle(f"{profile.dataset}: a training batch")
plt.tight_layout()

# %% [markdown]
# ## Exercise: how the exercises work
# Every notebook has at least one **to do**: a function in a code cell that you complete, followed by a cell
# that checks it. While the function is untouched it returns `None` and the check only says that the exercise
# is open; once you have written it, the check either confirms it or tells you what is wrong. Solutions are
# folded underneath.
#
# **To do 1.** Complete `class_counts(labels, num_classes)`: how many images of each class a batch holds, as a
# list of `num_classes` integers. (Hint: `torch.bincount`.)

# %%
def class_counts(labels, num_classes):
    """Number of labels equal to each class 0, ..., num_classes − 1, as a list of ints."""
    # TO DO: one line.


# %%
answer = class_counts(y, info.num_classes)
if answer is None:
    print("To do 1 is open: write class_counts above and run this cell again.")
else:
    expected = [int((y == k).sum()) for k in range(info.num_classes)]
    assert list(answer) == expected, f"expected {expected}, got {list(answer)}"
    assert sum(answer) == len(y), "every image has exactly one class"
    print("To do 1: correct.", dict(enumerate(expected)))

# %% [markdown]
# <details><summary>Solution</summary>
#
# ```python
# def class_counts(labels, num_classes):
#     return torch.bincount(labels, minlength=num_classes).tolist()
# ```
# </details>

# %% [markdown]
# ## Summary
# If every cell above ran, you are ready for **01 · Adversarial examples**.
#
# - Profiles: `smoke` (CPU, seconds), `class` (a GPU, CIFAR-10), `paper` (the paper's settings).
# - Run the whole suite headless with `python -m s2o_lib run-notebooks`; test it with `pytest --nbval`.
