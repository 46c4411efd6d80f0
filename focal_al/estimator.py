"""``SegmentationNet``: the segmentation network as a scikit-learn / skorch estimator.

It trains on patches (this module: parameters, input checks, the per-round learning-rate
schedule, augmentation, weights I/O), scores a pool of patches in one streaming pass
(:class:`~focal_al.pool_scoring.PoolScoring`, yielding the :class:`~focal_al.scores.PoolScores`
every query criterion reads) and runs whole images
(:class:`~focal_al.image_inference.WholeImageInference`).
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from skorch import NeuralNet
from skorch.dataset import unpack_data
from torch.utils.data import DataLoader, RandomSampler

from focal_al.nets import EDConvNet, fold_batchnorm
from focal_al.image_inference import WholeImageInference
from focal_al.pool_scoring import PoolScoring, dihedral
from focal_al import semi_supervised as semi
from focal_al.threads import check_threads, threaded, using_threads
from focal_al.training import SCHEDULES, learning_rate, steps_for

__all__ = ["SegmentationNet", "softmax_channels"]


def softmax_channels(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the class axis (dim 1) of ``(N, C, H, W)`` logits; the default ``predict_nonlinearity``."""
    return torch.softmax(logits.float(), dim=1)


class _PatchDataset(torch.utils.data.Dataset):
    """Reads patches (and labels) by index, so a memmap pool is never loaded whole.

    ``DataLoader`` fetches a whole batch through ``__getitems__``: one fancy-indexed read
    (increasing, unique indices, as memmap and h5py prefer) and one numpy array per batch. This
    replaces per-sample reads plus ``torch.stack`` in the default collate, which on a busy 2-core
    machine cost more than 100 ms per batch of 16 128x128 patches (OpenMP contention).
    """

    def __init__(self, X, y=None):
        self.X = X
        self.y = y

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, i):
        return self.__getitems__([i])

    def __getitems__(self, indices):
        unique, inverse = np.unique(np.asarray(indices, dtype=np.int64), return_inverse=True)
        x = torch.from_numpy(np.asarray(self.X[unique])[inverse])
        if self.y is None:
            return x, torch.zeros(len(inverse), dtype=torch.int64)
        return x, torch.from_numpy(np.asarray(self.y[unique])[inverse].astype(np.int64))


def _collate_batch(batch):
    """``collate_fn`` for :class:`_PatchDataset`, whose ``__getitems__`` already returns a batch."""
    return batch


class SegmentationNet(PoolScoring, WholeImageInference, NeuralNet):
    """A per-pixel classifier (ED-ConvNet by default) as a skorch / scikit-learn estimator.

    Inputs are patches ``X`` of shape ``(N, C, H, W)`` (uint8, divided by 255 inside, or float,
    used as is) and class labels ``y`` of shape ``(N, H, W)`` (``ignore_index`` marks unrevealed
    pixels, which the loss ignores). ``X`` and ``y`` may be ``numpy.memmap`` arrays (or any array
    that supports ``X[i]``): samples are read one at a time, never loaded whole.

    Parameters
    ----------
    module : torch.nn.Module class or instance, default=EDConvNet
        Must return ``(logits (N, C, H, W), descriptor (N, d))`` and should expose
        ``in_channels``, ``n_classes`` and ``size_multiple`` (used to validate inputs). Set its
        arguments with ``module__width=16`` etc.
    criterion : loss class, default=torch.nn.CrossEntropyLoss
        Built with ``ignore_index=ignore_index`` when it is ``CrossEntropyLoss`` (unless
        ``criterion__ignore_index`` is given).
    optimizer : optimizer class, default=torch.optim.Adam
    lr : float, default=1e-3
    max_epochs : int, default=10
    batch_size : int, default=16
    train_split : callable or None, default=None
        No internal validation split by default (labels are scarce in active learning).
    predict_nonlinearity : callable, default=softmax_channels
        Applied to the logits by ``predict_proba``.
    ignore_index : int, default=255
        Label value of unrevealed / ignored pixels.
    augment : bool, default=True
        During training only, apply to each sample of a batch one of the 8 flips / 90-degree
        rotations, drawn at random (flips and 180-degree rotation only for non-square patches),
        to the images and labels alike, on the batch tensor.
    color_jitter : float, default=0.0
        During training only, scale each sample's brightness and contrast by factors drawn
        uniformly in ``[1 - color_jitter, 1 + color_jitter]`` (0 disables it).
    steps_per_epoch : int or None, default=None
        If set, each epoch draws exactly this many batches, sampling patches with replacement, so
        that active-learning rounds train for equal gradient steps whatever the labelled-set size.
        If None (and ``passes_per_epoch`` is None), an epoch is one shuffled pass over the
        training set.
    passes_per_epoch : float or None, default=None
        If set, each epoch draws batches (with replacement) covering this many passes over the
        training set, clipped to ``[min_steps_per_epoch, max_steps_per_epoch]``: steps grow with
        the labelled set, with a floor for small sets and a cap on a round's time. Excludes
        ``steps_per_epoch``.
    min_steps_per_epoch : int, default=1
    max_steps_per_epoch : int or None, default=None
    lr_schedule : {"cosine", "constant"}, default="cosine"
        Learning rate within each ``fit`` / ``partial_fit`` call: ``"cosine"`` warms up linearly
        over ``lr_warmup`` of the call's steps, then decays along a half cosine to
        ``lr_final * lr``, so every call (every active-learning round) ends at a low rate
        (``focal_al.training.learning_rate``). ``"constant"``: ``lr`` throughout.
    lr_warmup : float, default=0.05
    lr_final : float, default=0.01
    score_tta : bool, default=False
        ``score_pool`` also runs every patch under the dihedral transforms used for augmentation
        (8 for square patches, 4 otherwise), maps the probabilities back, and returns
        ``extras["tta_disagreement"]``: the per-pixel variance of the class probabilities over
        the views, summed over classes and averaged over pixels (test-time augmentation
        disagreement, an epistemic uncertainty; criterion ``"tta"``). Scoring then costs 8x.
    score_gradients : bool, default=False
        ``score_pool`` also returns ``extras["gradient_embedding"]`` of shape ``(N, C * F)``: the
        gradient of the cross-entropy with respect to the 1x1 head's weights under the network's
        own most probable labels, ``(p - onehot(argmax p)) x f`` per pixel (``f`` the ``F``
        features the head reads), averaged over the patch's pixels (BADGE's embedding, Ash et al.
        2020, pooled over pixels; strategy ``"badge"``). Needs a module whose ``head`` is a 1x1
        convolution (``EDConvNet``); costs one forward hook, no backward pass.
    mc_samples : int, default=0
        If > 0, ``score_pool`` also samples that many predictions with the module's dropout on
        (MC dropout; needs ``module__dropout > 0``) and returns ``extras["bald"]``: the mutual
        information between prediction and weights, ``H(mean_t p) - mean_t H(p)`` per pixel,
        averaged over pixels (BALD, Houlsby et al. 2011; Gal et al. 2017; criterion ``"bald"``).
        The dropout masks are seeded from each batch's content, so scores are reproducible and do
        not touch any random stream.
    random_state : int, numpy Generator or None, default=None
        Seeds the weight initialisation, the batch order and the augmentation. With an int, the
        same calls give the same weights and predictions on CPU. Global RNG state is not touched.
        ``set_params(random_state=...)`` on an initialised net reseeds the batch-order and
        augmentation streams only (weights kept): the way to seed each warm-started round.
    device : str or torch.device, default="auto"
        ``"auto"``: CUDA if available, else CPU. The resolved device is ``device_``.
    mixed_precision : bool, default=True
        On CUDA, run the network under bfloat16 autocast (ignored on CPU, or where the GPU lacks
        bfloat16); losses, probabilities and scores are computed in float32.
    fast_path : bool, default=True
        Run the network in the ``channels_last`` memory format (module and inputs, in training and
        inference, on CPU and CUDA), and for inference on a copy of the module whose BatchNorms are
        folded into the convolutions (:func:`focal_al.nets.fold_batchnorm`). On one CPU thread
        (glas-cpu network) scoring ran 2.0x and a training step 1.3x as fast as the plain NCHW
        path (``benchmarks/bench_speed.py``); scores equal the plain path's to float32 rounding.
        False: the plain eager NCHW path (how runs before it were computed).
    threads : int, "auto" or None, default="auto"
        torch CPU threads while this net trains, scores or predicts (restored afterwards):
        ``"auto"`` follows :func:`focal_al.threads.default_threads` (``OMP_NUM_THREADS``, else half
        the usable cores, at least 1); None leaves torch's setting alone.
    semi_supervised : {None, "fixmatch", "self-training"}, default=None
        Also learn from unlabelled pixels (:mod:`focal_al.semi_supervised`): each step adds a batch
        of ``unlabelled_ratio x batch_size`` patches drawn from ``fit(..., X_unlabelled=pool)`` (by
        default ``X`` itself, whose unrevealed pixels carry no label; ``PatchActiveLearner`` passes
        the whole pool), pseudo-labelled where confident, with weight ``unlabelled_weight``.
        ``"fixmatch"``: the network's own weak-view prediction labels a strong view (stain, colour,
        blur, cutout). ``"self-training"``: a frozen copy of the network as the fit started labels
        the weak view (off in a fit from fresh weights, which have nothing to teach). The
        supervised loss sees only revealed pixels either way. None: supervised only.
    unlabelled_ratio : int, default=1
        Unlabelled patches per labelled patch in a step (FixMatch's mu).
    confidence : float, default=0.95
        Pixels whose top probability is below it get no pseudo-label (FixMatch's tau).
    unlabelled_weight : float, default=1.0
        Weight of the pseudo-label loss beside the supervised loss.
    inference_batch_size : int or None, default=None
        Patches per batch when scoring and predicting patches (``batch_size`` argument unset).
        None: ``batch_size`` on CPU; on CUDA, enough 64x64-patch equivalents to fill the card
        (512 per 64x64, scaled by the patch area), at least ``batch_size``.
    warm_start : bool, default=False
        skorch's warm start: if True, ``fit`` continues from the current weights and optimizer
        state instead of re-initialising (use it between active-learning rounds). ``partial_fit``
        always continues.
    verbose : int, default=0
        0 is silent; 1 prints skorch's per-epoch table.
    **kwargs
        Further skorch parameters (``iterator_train__shuffle`` defaults to True; ``callbacks``,
        ``module__*``, ``optimizer__*``, ...).

    Attributes
    ----------
    module_ : torch.nn.Module
        The initialised network.
    device_ : torch.device
        The device in use.

    Notes
    -----
    The net counts as fitted once initialised (skorch's convention); calling any prediction
    method before ``fit``, ``initialize`` or ``load_weights`` raises ``NotFittedError``.
    ``infer`` returns the logits only (what the loss and skorch's prediction code expect);
    the descriptor is read by calling ``module_`` directly in :meth:`score_pool` and
    :meth:`score_images`.
    """

    def __init__(
        self,
        module=EDConvNet,
        *,
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=1e-3,
        max_epochs=10,
        batch_size=16,
        train_split=None,
        predict_nonlinearity=softmax_channels,
        ignore_index=255,
        augment=True,
        color_jitter=0.0,
        steps_per_epoch=None,
        passes_per_epoch=None,
        min_steps_per_epoch=1,
        max_steps_per_epoch=None,
        lr_schedule="cosine",
        lr_warmup=0.05,
        lr_final=0.01,
        score_tta=False,
        score_gradients=False,
        mc_samples=0,
        random_state=None,
        device="auto",
        mixed_precision=True,
        fast_path=True,
        threads="auto",
        semi_supervised=None,
        unlabelled_ratio=1,
        confidence=0.95,
        unlabelled_weight=1.0,
        inference_batch_size=None,
        warm_start=False,
        verbose=0,
        **kwargs,
    ):
        kwargs.setdefault("iterator_train__shuffle", True)
        super().__init__(
            module,
            criterion,
            optimizer=optimizer,
            lr=lr,
            max_epochs=max_epochs,
            batch_size=batch_size,
            train_split=train_split,
            predict_nonlinearity=predict_nonlinearity,
            warm_start=warm_start,
            verbose=verbose,
            device=device,
            **kwargs,
        )
        self.ignore_index = ignore_index
        self.augment = augment
        self.color_jitter = color_jitter
        self.steps_per_epoch = steps_per_epoch
        self.passes_per_epoch = passes_per_epoch
        self.min_steps_per_epoch = min_steps_per_epoch
        self.max_steps_per_epoch = max_steps_per_epoch
        self.lr_schedule = lr_schedule
        self.lr_warmup = lr_warmup
        self.lr_final = lr_final
        self.score_tta = score_tta
        self.score_gradients = score_gradients
        self.mc_samples = mc_samples
        self.random_state = random_state
        self.mixed_precision = mixed_precision
        self.fast_path = fast_path
        self.threads = threads
        self.semi_supervised = semi_supervised
        self.unlabelled_ratio = unlabelled_ratio
        self.confidence = confidence
        self.unlabelled_weight = unlabelled_weight
        self.inference_batch_size = inference_batch_size

    # ------------------------------------------------------------------ initialisation

    def _check_params(self) -> None:
        problems = []
        if isinstance(self.ignore_index, bool) or not isinstance(self.ignore_index, (int, np.integer)):
            problems.append(f"'ignore_index' must be an int. Got {self.ignore_index!r} instead.")
        if not isinstance(self.color_jitter, (int, float)) or not 0 <= self.color_jitter < 1:
            problems.append(f"'color_jitter' must be a float in [0, 1). Got {self.color_jitter!r} instead.")
        spe = self.steps_per_epoch
        if spe is not None and (isinstance(spe, bool) or not isinstance(spe, (int, np.integer)) or spe < 1):
            problems.append(f"'steps_per_epoch' must be None or an int >= 1. Got {spe!r} instead.")
        if self.passes_per_epoch is not None:
            if spe is not None:
                problems.append("'passes_per_epoch' and 'steps_per_epoch' exclude each other; set one of them to None.")
            try:
                steps_for(1, 1, epochs=self.passes_per_epoch, min_steps=self.min_steps_per_epoch,
                          max_steps=self.max_steps_per_epoch)
            except ValueError as err:
                problems.append(str(err).replace("'epochs'", "'passes_per_epoch'").replace(
                    "'min_steps'", "'min_steps_per_epoch'").replace("'max_steps'", "'max_steps_per_epoch'"))
        if self.lr_schedule not in SCHEDULES:
            problems.append(f"'lr_schedule' must be one of {SCHEDULES}. Got {self.lr_schedule!r} instead.")
        if not isinstance(self.lr_warmup, (int, float)) or not 0 <= self.lr_warmup < 1:
            problems.append(f"'lr_warmup' must be a float in [0, 1). Got {self.lr_warmup!r} instead.")
        if not isinstance(self.lr_final, (int, float)) or not 0 <= self.lr_final <= 1:
            problems.append(f"'lr_final' must be a float in [0, 1]. Got {self.lr_final!r} instead.")
        if not isinstance(self.fast_path, (bool, np.bool_)):
            problems.append(f"'fast_path' must be True or False. Got {self.fast_path!r} instead.")
        try:
            check_threads(self.threads)
        except ValueError as err:
            problems.append(str(err).replace("The 'threads' parameter", "'threads'"))
        if self.semi_supervised is not None and self.semi_supervised not in semi.METHODS:
            problems.append(f"'semi_supervised' must be None or one of {semi.METHODS}. Got {self.semi_supervised!r} instead.")
        ratio = self.unlabelled_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, np.integer)) or ratio < 1:
            problems.append(f"'unlabelled_ratio' must be an int >= 1. Got {ratio!r} instead.")
        if isinstance(self.confidence, bool) or not isinstance(self.confidence, (int, float)) or not 0 <= self.confidence <= 1:
            problems.append(f"'confidence' must be a float in [0, 1]. Got {self.confidence!r} instead.")
        weight = self.unlabelled_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (weight >= 0 and np.isfinite(weight)):
            problems.append(f"'unlabelled_weight' must be a finite float >= 0. Got {weight!r} instead.")
        ibs = self.inference_batch_size
        if ibs is not None and (isinstance(ibs, bool) or not isinstance(ibs, (int, np.integer)) or ibs < 1):
            problems.append(f"'inference_batch_size' must be None or an int >= 1. Got {ibs!r} instead.")
        if problems:
            raise ValueError("Invalid parameters of SegmentationNet: " + " ".join(problems))

    def _resolve_device(self) -> torch.device:
        if isinstance(self.device, str) and self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device is None:
            return torch.device("cpu")
        return torch.device(self.device)

    @contextlib.contextmanager
    def _concrete_device(self):
        # skorch moves modules with ``to_device(m, self.device)``, which cannot read "auto";
        # resolve it for the duration of skorch's own initialisation, then restore the parameter
        # so that get_params/clone still see what the user passed.
        requested = self.__dict__["device"]
        self.__dict__["device"] = self.device_
        try:
            yield
        finally:
            self.__dict__["device"] = requested

    def _seed_streams(self) -> None:
        self.rng_ = np.random.default_rng(self.random_state)
        self.torch_generator_ = torch.Generator().manual_seed(int(self.rng_.integers(2**62)))
        # The module's own randomness in training (dropout) draws from torch's global RNG: each fit
        # seeds it from this stream (a child of rng_, whose draws it leaves as they were).
        self.module_rng_ = self.rng_.spawn(1)[0]

    def initialize(self):
        """Initialise (or re-initialise) the network, criterion, optimizer and random streams."""
        self._check_params()
        self.device_ = self._resolve_device()
        self._seed_streams()
        self.trained_steps_ = 0
        self._semi = None
        return super().initialize()

    def set_params(self, **kwargs):
        """Set parameters; on an initialised net, a new ``random_state`` reseeds the batch-order and
        augmentation streams (the weights are kept), so each active-learning round can be seeded."""
        super().set_params(**kwargs)
        if "random_state" in kwargs and getattr(self, "initialized_", False):
            self._seed_streams()
        return self

    def get_params_for_optimizer(self, prefix, named_parameters):
        """skorch's optimizer arguments; on CUDA, Adam and AdamW use their fused kernel.

        The foreach implementation launches several kernels per parameter tensor each step, which
        dominated a training step of the small bench networks on an H100 (measured with
        torch.profiler: ``Adam.step`` 40 % of the CPU time of a step). ``optimizer__fused=False``
        keeps the default.
        """
        args, kwargs = super().get_params_for_optimizer(prefix, named_parameters)
        device = getattr(self, "device_", None)
        if (prefix == "optimizer" and device is not None and device.type == "cuda"
                and self.optimizer in (torch.optim.Adam, torch.optim.AdamW) and "fused" not in kwargs):
            kwargs["fused"] = True
        return args, kwargs

    def _initialize_module(self, reason=None):
        with self._concrete_device():
            return super()._initialize_module(reason=reason)

    def _initialize_criterion(self, reason=None):
        with self._concrete_device():
            return super()._initialize_criterion(reason=reason)

    def __setstate__(self, state):
        # skorch maps the stored tensors onto ``state["device"]``, which cannot read "auto".
        requested = state["device"]
        auto = isinstance(requested, str) and requested == "auto"
        if auto:
            state["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        super().__setstate__(state)
        if auto:
            self.__dict__["device"] = requested
        if "device_" in self.__dict__:
            self.device_ = self._resolve_device()

    def initialize_module(self):
        """Build the module with weights drawn from ``random_state`` (global RNG untouched)."""
        seed = int(self.rng_.integers(2**62))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            super().initialize_module()
        if self.fast_path:
            # Convolutions in oneDNN (CPU) and cuDNN (tensor cores) run fastest on NHWC tensors;
            # parameters, gradients and optimiser state keep this format from here on.
            self.module_.to(memory_format=torch.channels_last)
        return self

    def get_params_for(self, prefix):
        params = super().get_params_for(prefix)
        if (
            prefix == "criterion"
            and isinstance(self.criterion, type)
            and issubclass(self.criterion, torch.nn.CrossEntropyLoss)
        ):
            params.setdefault("ignore_index", self.ignore_index)
        return params

    # ------------------------------------------------------------------ validation

    def _module_attr(self, name):
        module = getattr(self, "module_", None)
        return getattr(module, name, None)

    def _check_X(self, X, name: str = "X") -> list[str]:
        problems = []
        shape = getattr(X, "shape", None)
        if shape is None:
            return [f"'{name}' must be an array of shape (N, C, H, W); got {type(X).__name__}."]
        if len(shape) != 4:
            return [f"'{name}' must have shape (N, C, H, W); got shape {tuple(shape)}."]
        if shape[0] == 0:
            problems.append(f"'{name}' is empty (0 samples); at least one sample is needed.")
        dtype = np.dtype(getattr(X, "dtype", np.float32))
        if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
            problems.append(f"'{name}' must be uint8 (0..255) or float; got dtype {dtype}.")
        elif np.issubdtype(dtype, np.floating) and shape[0]:
            # NaN or inf input trains every weight to NaN without an error; the failure would only
            # surface later, inside clustering. Chunked, so a float memmap is not loaded whole.
            for start in range(0, shape[0], 256):
                chunk = np.asarray(X[start:start + 256])
                if not np.isfinite(chunk).all():
                    row = start + int(np.argmax(~np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1)))
                    problems.append(f"'{name}' holds NaN or infinite values (first in sample {row}); expected finite input.")
                    break
        in_channels = self._module_attr("in_channels")
        if in_channels is not None and shape[1] != in_channels:
            problems.append(
                f"'{name}' has {shape[1]} channels (axis 1 of shape {tuple(shape)}) but the module "
                f"expects in_channels={in_channels}; images must be channels-first (N, C, H, W)."
            )
        multiple = self._module_attr("size_multiple")
        if multiple is not None and (shape[2] % multiple or shape[3] % multiple):
            problems.append(
                f"'{name}' has spatial size {shape[2]}x{shape[3]}, which is not a multiple of "
                f"2**depth = {multiple}; use patch sides that are multiples of {multiple}, or "
                f"predict_images / score_images, which pad whole images."
            )
        return problems

    def _check_y(self, X, y) -> list[str]:
        shape = getattr(y, "shape", None)
        if shape is None:
            return [f"'y' must be an array of shape (N, H, W); got {type(y).__name__}."]
        if len(shape) != 3:
            return [f"'y' must have shape (N, H, W) (one class label per pixel); got shape {tuple(shape)}."]
        problems = []
        if len(y) != len(X):
            problems.append(f"'X' has {len(X)} samples but 'y' has {len(y)}.")
        elif tuple(shape[1:]) != tuple(X.shape[2:]):
            problems.append(f"'y' has spatial size {tuple(shape[1:])} but 'X' has {tuple(X.shape[2:])}.")
        dtype = np.dtype(y.dtype)
        if not np.issubdtype(dtype, np.integer):
            problems.append(f"'y' must hold integer class labels; got dtype {dtype}.")
            return problems
        n_classes = self._module_attr("n_classes")
        seen = set()
        # Chunked, so a memmap of labels is scanned without loading it whole.
        for start in range(0, len(y), 1024):
            seen.update(np.unique(np.asarray(y[start:start + 1024])).tolist())
        if n_classes is not None:
            bad = sorted(v for v in seen if (v < 0 or v >= n_classes) and v != self.ignore_index)
            if bad:
                problems.append(
                    f"'y' contains labels {bad[:10]} outside 0..{n_classes - 1} "
                    f"(n_classes={n_classes}) that are not the ignore value {self.ignore_index}."
                )
        if seen == {0, self.ignore_index} == {0, 255}:
            # Legitimate only when every revealed pixel is background; far more often a 0/255 mask.
            warnings.warn(
                "'y' holds only the values 0 and 255, but 255 is the ignore value (unrevealed pixels): no "
                "foreground pixel will be trained. If these are 0/255 binary masks, pass "
                "(mask > 0).astype(np.uint8) instead.",
                UserWarning,
                stacklevel=4,
            )
        return problems

    def check_data(self, X, y=None):
        """Validate training data (collects every problem into one ``ValueError``)."""
        if isinstance(X, torch.utils.data.Dataset):
            return  # a ready torch Dataset (skorch's convention) yields its own (X, y) batches
        problems = self._check_X(X)
        if y is None:
            problems.append("'y' is required to fit: class labels of shape (N, H, W).")
        elif len(getattr(X, "shape", ())) == 4:
            problems += self._check_y(X, y)
        if problems:
            raise ValueError("Invalid training data for SegmentationNet.fit: " + " ".join(problems))

    def _check_fitted(self, method: str) -> None:
        if not getattr(self, "initialized_", False) or getattr(self, "module_", None) is None:
            raise NotFittedError(
                f"This SegmentationNet instance is not fitted yet; call 'fit' (or 'load_weights') "
                f"before '{method}'."
            )

    def check_is_fitted(self, attributes=None, *args, **kwargs):
        self._check_fitted("predicting")

    # ------------------------------------------------------------------ data

    def get_dataset(self, X, y=None):
        if isinstance(X, torch.utils.data.Dataset):
            return X
        return _PatchDataset(X, y)

    def get_iterator(self, dataset, training=False):
        # Every DataLoader draws a base seed from its generator, or from the global RNG without one:
        # give each a generator so that fitting and predicting leave global RNG state alone.
        if not training:
            kwargs = self.get_params_for("iterator_valid")
            kwargs.setdefault("batch_size", self.batch_size)
            if kwargs["batch_size"] == -1:
                kwargs["batch_size"] = len(dataset)
            kwargs.setdefault("generator", torch.Generator())
            if isinstance(dataset, _PatchDataset):
                kwargs.setdefault("collate_fn", _collate_batch)
            return self.iterator_valid(dataset, **kwargs)
        kwargs = self.get_params_for("iterator_train")
        kwargs.setdefault("generator", self.torch_generator_)
        if self.device_.type == "cuda":
            kwargs.setdefault("pin_memory", True)  # page-locked batches copy to the GPU asynchronously
        if isinstance(dataset, _PatchDataset):
            kwargs.setdefault("collate_fn", _collate_batch)
        kwargs.setdefault("batch_size", self.batch_size)
        if kwargs["batch_size"] == -1:
            kwargs["batch_size"] = len(dataset)
        steps = self.epoch_steps(len(dataset), kwargs["batch_size"])
        if (
            "drop_last" not in kwargs
            and steps is None
            and len(dataset) > 1
            and len(dataset) % kwargs["batch_size"] == 1
        ):
            # A last batch of one sample breaks BatchNorm in training mode wherever a feature map
            # is 1x1 (small patches, deep nets): drop it (a different sample each shuffled epoch).
            kwargs["drop_last"] = True
        if "sampler" not in kwargs and "batch_sampler" not in kwargs:
            shuffle = kwargs.pop("shuffle", False)
            if steps is not None:
                kwargs["sampler"] = RandomSampler(
                    dataset,
                    replacement=True,
                    num_samples=steps * kwargs["batch_size"],
                    generator=self.torch_generator_,
                )
            elif shuffle:
                kwargs["sampler"] = RandomSampler(dataset, generator=self.torch_generator_)
        return self.iterator_train(dataset, **kwargs)

    def epoch_steps(self, n_samples: int, batch_size: int | None = None) -> int | None:
        """Batches one training epoch draws for ``n_samples`` (None: one shuffled pass)."""
        if self.steps_per_epoch is not None:
            return int(self.steps_per_epoch)
        if self.passes_per_epoch is None:
            return None
        return steps_for(int(n_samples), int(batch_size or self.batch_size), epochs=self.passes_per_epoch,
                         min_steps=self.min_steps_per_epoch, max_steps=self.max_steps_per_epoch)

    def _to_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device_, non_blocking=True)
        fmt = torch.channels_last if self.fast_path and x.dim() == 4 else torch.preserve_format
        if x.dtype == torch.uint8:
            return x.to(dtype=torch.float32, memory_format=fmt).div_(255.0)
        return x.to(dtype=torch.float32, memory_format=fmt)

    def _inference_module(self) -> torch.nn.Module:
        """The module that inference runs: ``module_`` in eval mode, or with ``fast_path`` an eval copy
        whose BatchNorms are folded into the convolutions (made per call: weights change between calls)."""
        self.module_.eval()
        return fold_batchnorm(self.module_) if self.fast_path else self.module_

    def _inference_batch_size(self, batch_size: int | None, sample_shape) -> int:
        """``batch_size`` if given, else ``inference_batch_size``, else the device's default (see there)."""
        if batch_size:
            return batch_size
        if self.inference_batch_size:
            return int(self.inference_batch_size)
        if self.device_.type == "cuda":
            area = int(np.prod(sample_shape[-2:])) if len(sample_shape) >= 2 else 64 * 64
            return max(int(self.batch_size), 512 * 64 * 64 // max(area, 1))
        return int(self.batch_size)

    def _autocast(self):
        enabled = (
            bool(self.mixed_precision)
            and self.device_.type == "cuda"
            and torch.cuda.is_bf16_supported()
        )
        return torch.autocast(device_type=self.device_.type, dtype=torch.bfloat16, enabled=enabled)

    def _augment(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training-time augmentation of a batch: random dihedral transform, then colour jitter."""
        n = x.shape[0]
        g = self.torch_generator_
        out_x, out_y = x, y
        if self.augment:
            out_x, out_y = self._randomdihedral(x, y)
        if self.color_jitter:
            cj = float(self.color_jitter)
            # One brightness and one contrast factor per sample.
            scale = (1 + cj * (2 * torch.rand((n, 2, 1, 1, 1), generator=g) - 1)).to(x.device)
            mean = out_x.mean(dim=(1, 2, 3), keepdim=True)
            out_x = ((out_x - mean) * scale[:, 1] + mean) * scale[:, 0]
            out_x = out_x.clamp_(0.0, 1.0)
        return out_x, out_y

    def _randomdihedral(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each sample gets one of the 8 flips / 90-degree rotations, images and labels alike."""
        n = x.shape[0]
        g = self.torch_generator_
        if x.shape[-1] == x.shape[-2]:
            ops = torch.randint(0, 8, (n,), generator=g)
        else:
            # Non-square patches keep their shape only under flips and the 180-degree rotation.
            ops = torch.tensor([0, 2, 4, 6])[torch.randint(0, 4, (n,), generator=g)]
        out_x, out_y = torch.empty_like(x), torch.empty_like(y)
        for k in torch.unique(ops).tolist():
            idx = (ops == k).nonzero().flatten().to(x.device)
            out_x[idx] = dihedral(x[idx], k)
            out_y[idx] = dihedral(y[idx], k)
        return out_x, out_y

    # ------------------------------------------------------------------ skorch hooks

    def infer(self, x, **fit_params):
        """Logits ``(N, C, H, W)`` of a batch (the descriptor is dropped; see ``score_pool``)."""
        x = self._to_input(x)
        with self._autocast():
            out = self.module_(x, **fit_params)
        logits = out[0] if isinstance(out, tuple) else out
        return logits.float()

    def train_step_single(self, batch, **fit_params):
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        Xi = self._to_input(Xi)
        yi = yi.to(self.device_, non_blocking=True)
        if self.augment or self.color_jitter:
            Xi, yi = self._augment(Xi, yi)
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        unlabelled = self._unlabelled_loss(len(Xi)) if getattr(self, "_semi", None) is not None else None
        if unlabelled is not None:
            self.history.record_batch("unlabelled_loss", float(unlabelled.detach()))
            loss = loss + float(self.unlabelled_weight) * unlabelled
        loss.backward()
        return {"loss": loss, "y_pred": y_pred}

    def _unlabelled_loss(self, n_labelled: int) -> torch.Tensor | None:
        """The pseudo-label loss of one step on a batch drawn from the unlabelled source (see
        ``semi_supervised``); None where the method has no teacher (self-training from fresh weights)."""
        source, teacher = self._semi
        if self.semi_supervised == "self-training" and teacher is None:
            return None
        g = self.torch_generator_
        n = int(self.unlabelled_ratio) * n_labelled
        rows = torch.randint(0, len(source), (n,), generator=g).numpy()
        unique, inverse = np.unique(rows, return_inverse=True)
        x = self._to_input(torch.from_numpy(np.asarray(source[unique])[inverse]))
        if self.augment:
            x, _ = self._randomdihedral(x, torch.zeros(x.shape[0], *x.shape[2:], dtype=torch.uint8, device=x.device))
        with torch.no_grad(), self._autocast():
            out = (teacher or self.module_)(x)
        targets = semi.pseudo_labels(out[0] if isinstance(out, tuple) else out, float(self.confidence),
                                     int(self.ignore_index))
        if self.semi_supervised == "fixmatch":
            x, cut = semi.strong_view(x, g)
            targets = targets.masked_fill(cut, int(self.ignore_index))
            if self.fast_path:
                x = x.contiguous(memory_format=torch.channels_last)
        return semi.pseudo_label_loss(self.infer(x), targets, int(self.ignore_index))

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        """skorch's loop, with the learning-rate schedule laid over this call's steps."""
        n_epochs = self.max_epochs if epochs is None else epochs
        n = len(X) if hasattr(X, "__len__") else 1  # anything else is refused by skorch's check_data
        batch = n if self.batch_size == -1 else self.batch_size
        per_epoch = self.epoch_steps(n, batch)
        if per_epoch is None:
            per_epoch = max(1, n // batch if (n > 1 and n % batch == 1) else -(-n // batch))
        self.lr_step_, self.lr_total_ = 0, int(n_epochs) * per_epoch
        # Dropout masks come from the global RNG: seeded here and restored after, a fit computes
        # the same in any process (a resumed run as an uninterrupted one) and leaves the caller's RNG alone.
        if not hasattr(self, "module_rng_"):  # a net pickled before this stream existed
            self.module_rng_ = self.rng_.spawn(1)[0]
        cuda = self.device_.type == "cuda"
        devices = [torch.cuda.current_device() if self.device_.index is None else self.device_.index] if cuda else []
        unlabelled = fit_params.pop("X_unlabelled", None)
        self._semi = None
        if self.semi_supervised is not None:
            source = X if unlabelled is None else unlabelled
            problems = self._check_X(source, "X_unlabelled")
            if problems:
                raise ValueError("Invalid unlabelled data for SegmentationNet.fit: " + " ".join(problems))
            # Self-training's teacher: the weights this fit starts from, frozen (none when they are fresh).
            trained = getattr(self, "trained_steps_", 0)
            teacher = self._inference_module() if self.semi_supervised == "self-training" and trained else None
            self._semi = (source, teacher)
        try:
            with torch.random.fork_rng(devices=devices), using_threads(self.threads):
                torch.manual_seed(int(self.module_rng_.integers(2**62)))
                return super().fit_loop(X, y, epochs=epochs, **fit_params)
        finally:
            self._semi = None

    def train_step(self, batch, **fit_params):
        """One optimiser step at the scheduled learning rate (``focal_al.training.learning_rate``)."""
        lr = learning_rate(getattr(self, "lr_step_", 0), getattr(self, "lr_total_", 1), self.lr,
                           schedule=self.lr_schedule, warmup=self.lr_warmup, final=self.lr_final)
        for group in self.optimizer_.param_groups:
            group["lr"] = lr
        self.lr_step_ = getattr(self, "lr_step_", 0) + 1
        self.trained_steps_ = getattr(self, "trained_steps_", 0) + 1
        return super().train_step(batch, **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """Criterion on the logits; 0 (with a graph) for a batch whose pixels are all ignored."""
        if isinstance(y_pred, tuple):
            y_pred = y_pred[0]
        y_true = torch.as_tensor(y_true).to(y_pred.device).long()
        # CrossEntropyLoss(reduction="mean") is 0/0 = NaN when every pixel is ignored, which
        # would poison the weights; such batches happen when patches overlap unrevealed regions.
        if not bool((y_true != self.ignore_index).any()):
            return y_pred.sum() * 0.0
        return self.criterion_(y_pred, y_true)

    # ------------------------------------------------------------------ training

    def fit(self, X, y=None, **fit_params):
        """Train on patches.

        Parameters
        ----------
        X : array-like of shape (N, C, H, W), uint8 or float
            Patches (a memmap is read lazily); H and W multiples of ``module_.size_multiple``.
        y : array-like of shape (N, H, W), int
            Class labels, ``ignore_index`` for unrevealed pixels.

        Returns
        -------
        self
        """
        return super().fit(X, y, **fit_params)

    # ------------------------------------------------------------------ prediction

    def _batches(self, X, batch_size: int | None, method: str) -> Iterator[torch.Tensor]:
        """Validate ``X`` now, then yield its batches (on the device, as float in [0, 1])."""
        problems = self._check_X(X)
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1
        ):
            problems.append(f"'batch_size' must be None or an int >= 1; got {batch_size!r}.")
        if problems:
            raise ValueError(f"Invalid input to SegmentationNet.{method}: " + " ".join(problems))
        loader = DataLoader(
            _PatchDataset(X),
            batch_size=self._inference_batch_size(batch_size, X.shape),
            shuffle=False,
            generator=torch.Generator(),
            collate_fn=_collate_batch,
            pin_memory=self.device_.type == "cuda",
        )
        return (self._to_input(xb) for xb, _ in loader)

    def _logits(self, module: torch.nn.Module, xb: torch.Tensor) -> torch.Tensor:
        """Float32 logits of a batch from ``module`` (an :meth:`_inference_module`)."""
        with self._autocast():
            out = module(xb)
        return (out[0] if isinstance(out, tuple) else out).float()

    @threaded
    def predict_proba(self, X, *, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities of patches.

        Parameters
        ----------
        X : array-like of shape (N, C, H, W), uint8 or float
        batch_size : int, optional
            Defaults to ``batch_size``.

        Returns
        -------
        ndarray of shape (N, C, H, W), float32
        """
        self._check_fitted("predict_proba")
        nonlin = self._get_predict_nonlinearity()
        batches = self._batches(X, batch_size, "predict_proba")
        out = None
        start = 0
        module = self._inference_module()
        with torch.inference_mode():
            for xb in batches:
                proba = nonlin(self._logits(module, xb)).float().cpu().numpy()
                if out is None:
                    out = np.empty((len(X),) + proba.shape[1:], dtype=np.float32)
                out[start:start + len(proba)] = proba
                start += len(proba)
        return out

    @threaded
    def predict(self, X, *, batch_size: int | None = None) -> np.ndarray:
        """Most probable class per pixel.

        Parameters
        ----------
        X : array-like of shape (N, C, H, W), uint8 or float
        batch_size : int, optional

        Returns
        -------
        ndarray of shape (N, H, W), int64
        """
        self._check_fitted("predict")
        batches = self._batches(X, batch_size, "predict")
        out = np.empty((len(X),) + tuple(X.shape[2:]), dtype=np.int64)
        start = 0
        module = self._inference_module()
        with torch.inference_mode():
            for xb in batches:
                labels = self._logits(module, xb).argmax(dim=1).cpu().numpy()
                out[start:start + len(labels)] = labels
                start += len(labels)
        return out

    # ------------------------------------------------------------------ weights

    def save_weights(self, path, *, optimizer: bool = False) -> None:
        """Save the network's weights to a safetensors file (:mod:`focal_al.weights`), atomically.

        Parameters
        ----------
        path : str or path-like
        optimizer : bool, default=False
            Also save the optimiser's state, so that training resumes exactly (the bench's checkpoints).
        """
        from focal_al.weights import write_weights

        self._check_fitted("save_weights")
        optimizer_state = self.optimizer_.state_dict() if optimizer else None
        write_weights(path, self.module_.state_dict(), optimizer_state)

    def load_weights(self, path, *, optimizer: bool = False):
        """Load weights saved by :meth:`save_weights`, initialising the net first if needed.

        Only tensors are read (safetensors; an older ``torch.save`` file with
        ``torch.load(weights_only=True)``): nothing in the file is executed.

        Parameters
        ----------
        path : str or path-like
        optimizer : bool, default=False
            Also restore the optimiser's state; the file must hold it.

        Returns
        -------
        self
        """
        from focal_al.weights import read_weights

        if not getattr(self, "initialized_", False):
            self.initialize()
        state, optimizer_state = read_weights(path, device=self.device_)
        if optimizer and optimizer_state is None:
            raise ValueError(f"The weights file '{path}' holds no optimiser state; it cannot resume training exactly.")
        try:
            self.module_.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
            stem = state.get("encoder.blocks.0.0.weight")
            blocks = {k.split(".")[2] for k in state if k.startswith("encoder.blocks.")}
            held = (f"the file holds width {stem.shape[0]}, depth {len(blocks) - 1}; " if stem is not None and blocks
                    else "")
            raise ValueError(f"The weights file '{path}' does not fit the network: {held}this "
                             f"{type(self.module_).__name__} has width {self._module_attr('width')}, depth "
                             f"{self._module_attr('depth')} ({first})") from exc
        if optimizer:
            self.optimizer_.load_state_dict(optimizer_state)
        self.mark_trained()
        return self

    def mark_trained(self) -> None:
        """Record that the module holds trained weights (loaded from a file): a later self-training fit
        takes them as its teacher, as it would after this net's own training."""
        self.trained_steps_ = max(getattr(self, "trained_steps_", 0), 1)
