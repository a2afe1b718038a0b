"""Build the public test corpus of issue 12 into a local cache, from registry packages only.

Usage::

    python models/corpus.py build [--families node,sklearn,arch] [--sample ci]
    python models/corpus.py list [--families ...] [--sample ci]

Layout (shared with ``models/corpus_arch.py`` and the ``real`` family)::

    <root>/<family>/<name>/model.onnx          (+ model.onnx.data when weights are external)
    <root>/<family>/<name>/test_data_set_0/    input_0.pb ... output_0.pb (ONNX backend test
                                               format, inputs in graph-input order); optional
    <root>/<family>/<name>/meta.json           {"family", "name", "source", "tags", "notes"}

``<root>`` is ``$ONNXSLIM_CORPUS_DIR`` if set, else ``models/.cache/corpus/`` (git-ignored).

Families:

``node``
    All ONNX backend node tests (1,765 one-op models with their inputs and expected outputs),
    extracted from the sdist of ``onnx==1.22.0``: the last release whose sdist ships
    ``onnx/backend/test/data/node/`` (1.23's sdist and every wheel leave it out). The sdist is
    fetched once with ``pip download --no-binary onnx`` (only onnx itself from source: the build
    tools come as wheels; pip prepares its metadata, about a minute) and kept in
    ``<root>/_downloads/``, checked against a SHA-256.
``backend``
    The same sdist's other backend tests (140): ``pytorch-converted`` (82 small models exported
    from PyTorch), ``pytorch-operator`` (35 single operators) and ``simple`` (23), many at IR 3,
    with their inputs and expected outputs; named ``<folder>__<test>``.
``sklearn``
    scikit-learn pipelines converted with skl2onnx (``ai.onnx.ml`` ops, ZipMap sequence-of-map
    outputs, one string-input model), trained on tiny seeded synthetic data. Expected outputs are
    onnxruntime's, checked against scikit-learn's predictions when the model is built.
``arch``
    Written by ``models/corpus_arch.py --out <root>/arch`` when that script exists.

A build is idempotent (a model whose folder exists is kept) and atomic per model: each model is
written to a temporary folder beside its final one and renamed into place, so a crash leaves no
half model. ``--sample ci`` builds only the fixed CI sample (:data:`CI_NODE_SAMPLE`,
:data:`CI_ARCH_SAMPLE` and every sklearn model).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

HERE = Path(__file__).resolve().parent
FAMILIES = ("node", "backend", "sklearn", "arch")

ONNX_SDIST_VERSION = "1.22.0"
ONNX_SDIST_SHA256 = "ef40c0aaf0b643857ea9306fc7eddce17eaf9fb0407e4801f1fc5758443a38e0"
_DATA_PREFIX = f"onnx-{ONNX_SDIST_VERSION}/onnx/backend/test/data/"
#: The sdist's backend-test folders beside ``node/``: 82 + 35 + 23 models.
BACKEND_FOLDERS = ("pytorch-converted", "pytorch-operator", "simple")

#: 150 node tests, one or a few per op family, picked once from the sorted test names so that
#: the sample covers plain ops, expanded functions (attention, layer norm, softmax-cross-entropy),
#: control flow (If/Loop/Scan), sequences and optionals, quantization, strings, fp16/bf16/fp8
#: and int4 cases, training ops and random ops. Fixed here, never chosen by timing.
CI_NODE_SAMPLE = (
    "test_abs", "test_adagrad", "test_adam", "test_add_bcast", "test_affine_grid_2d_expanded",
    "test_ai_onnx_ml_label_encoder_string_int", "test_ai_onnx_ml_tree_ensemble_set_membership",
    "test_and_bcast4v4d", "test_argmax_keepdims_random", "test_argmin_no_keepdims_example",
    "test_attention_3d_causal_expanded", "test_attention_4d_gqa",
    "test_attention_4d_with_past_and_present", "test_averagepool_2d_pads",
    "test_basic_conv_with_padding", "test_batchnorm_epsilon", "test_bernoulli_seed",
    "test_bitshift_right_uint16", "test_bitwise_xor_i16_3d", "test_blackmanwindow_expanded",
    "test_cast_FLOAT16_to_FLOAT", "test_cast_FLOAT_to_BFLOAT16", "test_cast_FLOAT_to_FLOAT8E4M3FN",
    "test_celu_expanded", "test_center_crop_pad_crop_axes_chw_expanded",
    "test_clip_default_int8_min_expanded", "test_col2im_pads", "test_compress_1",
    "test_concat_3d_axis_negative_1", "test_constant", "test_constantofshape_int_zeros",
    "test_convinteger_with_padding", "test_convtranspose_autopad_same",
    "test_convtranspose_group_2", "test_cumsum_2d_axis_0", "test_deform_conv_with_mask_bias",
    "test_depthtospace_crd_mode_example", "test_dequantizelinear_axis",
    "test_dequantizelinear_int4", "test_det_nd", "test_dft_axis", "test_div_bcast",
    "test_dropout_default_mask", "test_dynamicquantizelinear_expanded", "test_edge_pad",
    "test_einsum_batch_matmul", "test_elu_default", "test_equal_string", "test_expand_dim_changed",
    "test_eyelike_with_dtype", "test_flatten_axis0", "test_gather_elements_negative_indices",
    "test_gathernd_example_int32_batch_dim1", "test_gelu_tanh_2_expanded",
    "test_gemm_all_attributes", "test_globalaveragepool", "test_greater_equal_bcast_expanded",
    "test_gridsample_bicubic", "test_group_normalization_epsilon_expanded", "test_gru_seq_length",
    "test_hammingwindow_symmetric", "test_hardmax_axis_1", "test_hardswish_expanded",
    "test_identity_opt", "test_identity_sequence", "test_if_opt", "test_if_seq",
    "test_image_decoder_decode_png_rgb", "test_instancenorm_example", "test_isinf_float16",
    "test_isnan", "test_layer_normalization_4d_axis_negative_2_expanded", "test_leakyrelu_default",
    "test_logsoftmax_axis_1_expanded", "test_loop11", "test_loop13_seq", "test_loop16_seq_none",
    "test_lppool_2d_pads", "test_lrn", "test_lstm_with_peepholes", "test_matmul_4d",
    "test_matmulinteger", "test_max_float16", "test_maxpool_2d_ceil",
    "test_maxpool_with_argmax_2d_precomputed_strides", "test_maxunpool_export_with_output_shape",
    "test_melweightmatrix", "test_mish_expanded", "test_mod_mixed_sign_float16",
    "test_momentum_multiple", "test_mvn_expanded",
    "test_nllloss_NCd1d2d3_sum_weight_high_ii_expanded",
    "test_nonmaxsuppression_center_point_box_format", "test_nonzero_example",
    "test_onehot_negative_indices", "test_optional_get_element_optional_sequence",
    "test_optional_has_element_empty_optional_input", "test_pow_types_int64_int64",
    "test_prelu_broadcast_expanded", "test_qlinearconv", "test_qlinearmatmul_3D_int8_float32",
    "test_quantizelinear_blocked_asymmetric", "test_quantizelinear_float4e2m1",
    "test_range_float_type_positive_delta_expanded",
    "test_reduce_log_sum_exp_keepdims_random_expanded", "test_reduce_max_bool_inputs",
    "test_reduce_mean_do_not_keepdims_random", "test_reduce_sum_empty_axes_input_noop",
    "test_regex_full_match_email_domain", "test_relu_expanded_ver18",
    "test_reshape_allowzero_reordered", "test_resize_downsample_scales_cubic_antialias",
    "test_resize_upsample_sizes_nearest_floor_align_corners", "test_reversesequence_batch",
    "test_rms_normalization_3d_axis_negative_1_epsilon_expanded", "test_rnn_seq_length",
    "test_roialign_aligned_true", "test_rotary_embedding_with_interleaved_rotary_dim_expanded",
    "test_scan9_sum", "test_scatter_elements_with_reduction_max", "test_scatternd_multiply",
    "test_sce_mean_weight_ii_4d_expanded", "test_selu_default_expanded_ver18",
    "test_sequence_insert_at_front", "test_sequence_map_add_2_sequences_expanded",
    "test_shape_start_negative_1", "test_size", "test_slice_negative_axes",
    "test_softmax_axis_0_expanded_ver18", "test_softplus_example_expanded_ver18",
    "test_spacetodepth", "test_split_to_sequence_nokeepdims",
    "test_split_variable_parts_2d_opset18", "test_squeeze_negative_axes", "test_stft_with_window",
    "test_string_concat_broadcasting", "test_string_split_basic",
    "test_strnormalizer_export_monday_casesensintive_lower", "test_swish_expanded",
    "test_tensorscatter_3d", "test_tfidfvectorizer_tf_batch_onlybigrams_skip0",
    "test_thresholdedrelu_expanded_ver18", "test_tile_precomputed", "test_top_k_smallest",
    "test_transpose_all_permutations_4", "test_tril_neg", "test_unique_sorted_with_axis",
    "test_unsqueeze_three_axes", "test_where_long_example", "test_xor_bcast4v4d",
)

#: Eight architectures from models/corpus_arch.py (a name it does not build is skipped).
CI_ARCH_SAMPLE = ("resnet_legacy_op11", "bert_neg1_legacy_op12", "gpt2_past_legacy_op14", "vit_legacy_op13",
                  "lstm_crnn_legacy_op12", "wav2vec2_legacy_op14", "mobilenetv3_ir3_legacy_op9", "albert_legacy_op13")




#: Backend tests of the CI sample: IR 3 at opset 6 (BatchNorm, a Pad whose upgrade adds an
#: initializer, Pow with NaN outputs), an embedding, and a sequence model at a current opset.
CI_BACKEND_SAMPLE = (
    "pytorch-converted__test_BatchNorm1d_3d_input_eval", "pytorch-converted__test_ConstantPad2d",
    "pytorch-converted__test_Embedding", "pytorch-operator__test_operator_pow", "simple__test_sequence_model2",
)

#: The sklearn models of the CI sample (the family's first twelve; the later ones run in full runs).
CI_SKLEARN_SAMPLE = (
    "scaler_logreg", "scaler_logreg_nozipmap", "random_forest", "gradient_boosting_regressor", "svc", "kmeans",
    "pca_linear_regression", "imputer_minmax_ridge", "decision_tree_regressor", "mlp_classifier",
    "knn_classifier", "tfidf_logreg_string_input",
)


def ci_lossy_models() -> set[str]:
    """The CI sample's models that also run the four lossy commands (keeps CI within its budget):
    every fourth node test of the sample (38) and the sample's sklearn models."""
    return {f"node/{n}" for n in sorted(CI_NODE_SAMPLE)[::4]} | {f"sklearn/{n}" for n in CI_SKLEARN_SAMPLE}


class CorpusError(RuntimeError):
    """The corpus could not be built (one-line message)."""


def corpus_root() -> Path:
    env = os.environ.get("ONNXSLIM_CORPUS_DIR")
    return Path(env).expanduser() if env else HERE / ".cache" / "corpus"


# ---------------------------------------------------------------- the models on disk


def model_dirs(root: Path, families=None, sample: str | None = None) -> list[Path]:
    """Every built model folder (one holding meta.json), sorted by family then name."""
    wanted = _sample_names() if sample == "ci" else None
    found = []
    for family_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))) \
            if root.is_dir() else []:
        if families and family_dir.name not in families:
            continue
        for d in sorted(family_dir.iterdir()):
            if d.name.startswith(".") or not (d / "meta.json").is_file():
                continue
            if wanted is not None and family_dir.name in wanted and d.name not in wanted[family_dir.name]:
                continue
            found.append(d)
    return found


def _sample_names() -> dict[str, set[str]]:
    """The CI sample by family; a family not listed here (real) is taken whole."""
    return {"node": set(CI_NODE_SAMPLE), "arch": set(CI_ARCH_SAMPLE), "sklearn": set(CI_SKLEARN_SAMPLE),
            "backend": set(CI_BACKEND_SAMPLE)}


def write_meta(folder: Path, family: str, name: str, source: str, tags: list[str], notes: str = "") -> None:
    meta = {"family": family, "name": name, "source": source, "tags": sorted(set(tags)), "notes": notes}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def _install(staged: Path, final: Path) -> bool:
    """Rename a fully written model folder into place; False when another build got there first."""
    try:
        os.rename(staged, final)
        return True
    except OSError:
        if (final / "meta.json").is_file():
            shutil.rmtree(staged, ignore_errors=True)
            return False
        raise


def model_tags(model: onnx.ModelProto) -> list[str]:
    """op:<Type> for every op (subgraphs included), opset:<domain>=<v>, dtype:<elem> of inputs."""
    tags = {f"opset:{o.domain or 'ai.onnx'}={o.version}" for o in model.opset_import}
    tags.add(f"ir:{model.ir_version}")

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            tags.add(f"op:{node.domain + '.' if node.domain else ''}{node.op_type}")
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    tags.add("subgraph")
                    walk(attr.g)
                for g in attr.graphs:
                    tags.add("subgraph")
                    walk(g)

    walk(model.graph)
    for value in model.graph.input:
        kind = value.type.WhichOneof("value")
        if kind == "tensor_type":
            tags.add("dtype:" + onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type).lower())
        else:
            tags.add(f"input:{kind}")
    if model.functions:
        tags.add("functions")
    return sorted(tags)


# ---------------------------------------------------------------- ONNX test-data files


def read_value(path: Path, type_proto: onnx.TypeProto):
    """One test-data file as numpy (tensor), list (sequence), dict (map) or None/value (optional)."""
    kind = type_proto.WhichOneof("value")
    data = path.read_bytes()
    if kind == "sequence_type":
        proto = onnx.SequenceProto()
        proto.ParseFromString(data)
        return numpy_helper.to_list(proto)
    if kind == "map_type":
        proto = onnx.MapProto()
        proto.ParseFromString(data)
        return numpy_helper.to_dict(proto)
    if kind == "optional_type":
        proto = onnx.OptionalProto()
        proto.ParseFromString(data)
        return numpy_helper.to_optional(proto)
    proto = onnx.TensorProto()
    proto.ParseFromString(data)
    return numpy_helper.to_array(proto)


def read_test_data(model_dir: Path, model: onnx.ModelProto, index: int = 0):
    """(inputs by name, expected outputs by name) of test_data_set_<index>, or None when absent."""
    folder = model_dir / f"test_data_set_{index}"
    if not folder.is_dir():
        return None
    initializers = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    feeds = {}
    for i, value in enumerate(inputs):
        path = folder / f"input_{i}.pb"
        if path.is_file():
            feeds[value.name] = read_value(path, value.type)
    expected = {}
    for i, value in enumerate(model.graph.output):
        path = folder / f"output_{i}.pb"
        if path.is_file():
            expected[value.name] = read_value(path, value.type)
    return feeds, expected


def write_value(path: Path, value, name: str) -> None:
    if isinstance(value, list):
        proto = numpy_helper.from_list([_to_numpy(v) for v in value], name)
    elif isinstance(value, dict):
        proto = numpy_helper.from_dict(value, name)
    else:
        proto = numpy_helper.from_array(_to_numpy(value), name)
    path.write_bytes(proto.SerializeToString())


def _to_numpy(value):
    return value if isinstance(value, (dict, list)) else np.asarray(value)


# ---------------------------------------------------------------- node family


def _onnx_sdist(root: Path) -> Path:
    """The pinned onnx sdist, downloaded once into <root>/_downloads/."""
    downloads = root / "_downloads"
    sdist = downloads / f"onnx-{ONNX_SDIST_VERSION}.tar.gz"
    if not sdist.is_file():
        downloads.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=downloads) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", "onnx",
                   f"onnx=={ONNX_SDIST_VERSION}", "-d", tmp]
            print(f"corpus: downloading the onnx {ONNX_SDIST_VERSION} sdist (about a minute)", file=sys.stderr)
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
            got = Path(tmp) / sdist.name
            if done.returncode != 0 or not got.is_file():
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise CorpusError(f"pip download onnx=={ONNX_SDIST_VERSION} (sdist) failed: {last}")
            os.replace(got, sdist)
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != ONNX_SDIST_SHA256:
        raise CorpusError(f"{sdist} has SHA-256 {digest}, expected {ONNX_SDIST_SHA256}; delete it to refetch")
    return sdist


def build_node(root: Path, names: set[str] | None = None) -> int:
    """Extract the node tests (only ``names`` when given) into <root>/node/. Returns models added."""
    return _extract_backend_tests(root, "node", ("node",), names)


def build_backend(root: Path, names: set[str] | None = None) -> int:
    """Extract the sdist's other backend tests (whole small models exported from PyTorch, single
    PyTorch operators, and the ``simple`` graphs; many at IR 3) into <root>/backend/, each named
    ``<folder>__<test>`` (only ``names`` when given). Returns models added."""
    return _extract_backend_tests(root, "backend", BACKEND_FOLDERS, names)


def _extract_backend_tests(root: Path, family: str, folders: tuple[str, ...], names: set[str] | None) -> int:
    """Extract ``onnx/backend/test/data/<folder>/<test>/`` for each of ``folders`` into
    <root>/<family>/ (a test of a folder other than ``family`` is named ``<folder>__<test>``)."""
    target = root / family
    target.mkdir(parents=True, exist_ok=True)
    existing = {d.name for d in target.iterdir() if (d / "meta.json").is_file()}
    if names is not None and names <= existing:
        return 0
    added = 0
    with tempfile.TemporaryDirectory(dir=target, prefix=".staging-") as staging_dir:
        staging = Path(staging_dir)
        with tarfile.open(_onnx_sdist(root)) as tar:
            members = []
            for m in tar.getmembers():
                if not m.name.startswith(_DATA_PREFIX) or not m.isfile():
                    continue
                folder, _, rest = m.name[len(_DATA_PREFIX):].partition("/")
                test, _, inner = rest.partition("/")
                if folder not in folders or not inner:
                    continue
                name = test if folder == family else f"{folder}__{test}"
                if name in existing or (names is not None and name not in names):
                    continue
                m.name = f"{name}/{inner}"
                members.append(m)
            tar.extractall(staging, members=members, filter="data")
        for test_dir in sorted(staging.iterdir()):
            if not (test_dir / "model.onnx").is_file():
                continue
            model = onnx.load(test_dir / "model.onnx", load_external_data=False)
            tags = model_tags(model)
            if test_dir.name.endswith("_expanded") or "_expanded_" in test_dir.name:
                tags.append("expanded")
            folder, _, test = test_dir.name.rpartition("__")
            write_meta(test_dir, family, test_dir.name, f"onnx=={ONNX_SDIST_VERSION} sdist, "
                       f"onnx/backend/test/data/{folder or family}/{test}", tags)
            added += _install(test_dir, target / test_dir.name)
    missing = sorted((names or set()) - existing - {d.name for d in target.iterdir()})
    if missing:
        raise CorpusError(f"{family} tests not in the onnx {ONNX_SDIST_VERSION} sdist: {', '.join(missing[:5])}")
    return added


# ---------------------------------------------------------------- arch family


def build_arch(root: Path, names: tuple[str, ...] | None = None) -> int:
    """Run models/corpus_arch.py when it exists (another engineer's script). Returns its exit code."""
    script = HERE / "corpus_arch.py"
    if not script.is_file():
        print("corpus: models/corpus_arch.py is not here yet: arch family skipped", file=sys.stderr)
        return 0
    cmd = [sys.executable, str(script), "--out", str(root / "arch")]
    if names:
        cmd += ["--only", ",".join(names)]
    return subprocess.run(cmd).returncode


# ---------------------------------------------------------------- entry point


def build(families=FAMILIES, sample: str | None = None, root: Path | None = None) -> dict[str, int]:
    """Build the families into root; returns models added per family. Raises CorpusError."""
    root = root or corpus_root()
    root.mkdir(parents=True, exist_ok=True)
    added = {}
    if "node" in families:
        added["node"] = build_node(root, set(CI_NODE_SAMPLE) if sample == "ci" else None)
    if "backend" in families:
        added["backend"] = build_backend(root, set(CI_BACKEND_SAMPLE) if sample == "ci" else None)
    if "sklearn" in families:
        from corpus_sklearn import build_sklearn  # noqa: PLC0415 - needs scikit-learn and skl2onnx

        added["sklearn"] = build_sklearn(root)
    if "arch" in families:
        code = build_arch(root, CI_ARCH_SAMPLE if sample == "ci" else None)
        if code != 0:
            raise CorpusError(f"models/corpus_arch.py exited {code}")
    return added


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("build", "list"))
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated: node,backend,sklearn,arch")
    parser.add_argument("--sample", choices=("ci",), help="only the fixed CI sample")
    args = parser.parse_args(argv)
    families = tuple(f for f in args.families.split(",") if f)
    root = corpus_root()
    if args.action == "build":
        try:
            added = build(families, args.sample, root)
        except (CorpusError, ImportError) as exc:
            print(f"corpus: error: {exc}", file=sys.stderr)
            return 1
        print(f"{root}: added " + ", ".join(f"{k} {v}" for k, v in added.items()))
    dirs = model_dirs(root, None if args.action == "build" else families, args.sample)
    counts: dict[str, int] = {}
    for d in dirs:
        counts[d.parent.name] = counts.get(d.parent.name, 0) + 1
        if args.action == "list":
            print(f"{d.parent.name}/{d.name}")
    print(f"{root}: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "empty"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
