"""The corpus's sklearn family: scikit-learn pipelines converted with skl2onnx.

Each model is trained on tiny seeded synthetic data and written with test_data_set_0: the inputs,
and as expected outputs onnxruntime's results on the converted model, checked here against
scikit-learn's own predictions (labels equal, probabilities/values within 1e-4) so that a broken
conversion never enters the corpus. Classifiers keep skl2onnx's default ZipMap output (a sequence
of maps) except where ``zipmap=False`` is noted: onnxslim must pass these through untouched.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import corpus


def _models(rng: np.random.Generator):
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA, TruncatedSVD
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import (
        BayesianRidge,
        ElasticNet,
        Lasso,
        LinearRegression,
        LogisticRegression,
        Ridge,
        SGDClassifier,
    )
    from sklearn.naive_bayes import BernoulliNB, GaussianNB
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import (
        Binarizer,
        MaxAbsScaler,
        MinMaxScaler,
        Normalizer,
        PolynomialFeatures,
        RobustScaler,
        StandardScaler,
    )
    from sklearn.svm import SVC, SVR, LinearSVR
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    x = rng.normal(size=(64, 6)).astype(np.float32)
    y_cls = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(np.int64) + (x[:, 3] > 1)
    y_reg = (x @ rng.normal(size=6) + 0.1 * rng.normal(size=64)).astype(np.float32)
    # lowercase=False: a StringNormalizer needs an en_US.UTF-8 locale that minimal systems lack
    texts = np.array(["the cat sat", "a dog ran", "the dog sat down", "cats and dogs", "a cat ran far",
                      "down the road", "the road ran", "dogs sat"] * 4)
    y_txt = np.arange(len(texts)) % 2
    return [
        ("scaler_logreg", make_pipeline(StandardScaler(), LogisticRegression()), x, y_cls, {}),
        ("scaler_logreg_nozipmap", make_pipeline(StandardScaler(), LogisticRegression()), x, y_cls,
         {"zipmap": False}),
        ("random_forest", RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0), x, y_cls, {}),
        ("gradient_boosting_regressor", GradientBoostingRegressor(n_estimators=10, max_depth=3, random_state=0),
         x, y_reg, {}),
        ("svc", make_pipeline(StandardScaler(), SVC(random_state=0)), x, y_cls, {}),
        ("kmeans", KMeans(n_clusters=3, n_init=3, random_state=0), x, None, {}),
        ("pca_linear_regression", make_pipeline(PCA(n_components=3), LinearRegression()), x, y_reg, {}),
        ("imputer_minmax_ridge", make_pipeline(SimpleImputer(), MinMaxScaler(), Ridge()), x, y_reg, {}),
        ("decision_tree_regressor", DecisionTreeRegressor(max_depth=4, random_state=0), x, y_reg, {}),
        ("mlp_classifier", MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0), x, y_cls,
         {"zipmap": False}),
        ("knn_classifier", KNeighborsClassifier(n_neighbors=3), x, y_cls, {}),
        ("tfidf_logreg_string_input", make_pipeline(TfidfVectorizer(lowercase=False), LogisticRegression()), texts, y_txt, {}),
        # added with the backend family, to take the corpus past 2,000 models (not in the CI sample)
        ("extra_trees", ExtraTreesClassifier(n_estimators=5, max_depth=4, random_state=0), x, y_cls, {}),
        ("random_forest_regressor", RandomForestRegressor(n_estimators=5, max_depth=4, random_state=0), x, y_reg, {}),
        ("gradient_boosting_classifier", GradientBoostingClassifier(n_estimators=5, max_depth=2, random_state=0),
         x, y_cls, {}),
        ("decision_tree_classifier", DecisionTreeClassifier(max_depth=4, random_state=0), x, y_cls,
         {"zipmap": False}),
        ("lasso", Lasso(alpha=0.01), x, y_reg, {}),
        ("elastic_net", make_pipeline(StandardScaler(), ElasticNet(alpha=0.01)), x, y_reg, {}),
        ("bayesian_ridge", BayesianRidge(), x, y_reg, {}),
        ("sgd_classifier", make_pipeline(StandardScaler(), SGDClassifier(random_state=0)), x, y_cls, {}),
        ("normalizer_logreg", make_pipeline(Normalizer(), LogisticRegression()), x, y_cls, {}),
        ("linear_svr", make_pipeline(RobustScaler(), LinearSVR(random_state=0, max_iter=5000)), x, y_reg, {}),
        ("svr", make_pipeline(StandardScaler(), SVR()), x, y_reg, {}),
        ("gaussian_nb", GaussianNB(), x, y_cls, {}),
        ("bernoulli_nb", make_pipeline(Binarizer(), BernoulliNB()), x, y_cls, {}),
        ("knn_regressor", KNeighborsRegressor(n_neighbors=3), x, y_reg, {}),
        ("mlp_regressor", MLPRegressor(hidden_layer_sizes=(8,), max_iter=300, random_state=0), x, y_reg, {}),
        ("polynomial_ridge", make_pipeline(PolynomialFeatures(2), Ridge()), x, y_reg, {}),
        ("maxabs_lda", make_pipeline(MaxAbsScaler(), LinearDiscriminantAnalysis()), x, y_cls, {}),
        ("truncated_svd_logreg", make_pipeline(TruncatedSVD(n_components=3, random_state=0), LogisticRegression()),
         x, y_cls, {}),
    ]


def build_sklearn(root: Path) -> int:
    """Write every sklearn model that is not there yet into <root>/sklearn/. Returns models added."""
    import warnings

    import onnxruntime as ort
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    family = root / "sklearn"
    family.mkdir(parents=True, exist_ok=True)
    added = 0
    for name, estimator, x, y, options in _models(np.random.default_rng(0)):
        if (family / name / "meta.json").is_file():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator.fit(x, y) if y is not None else estimator.fit(x)
        is_text = x.dtype.kind in "US"
        initial = [("input", StringTensorType([None]) if is_text else FloatTensorType([None, x.shape[1]]))]
        onx = to_onnx(estimator, initial_types=initial, options={id(estimator): options} if options else None,
                      target_opset={"": 17, "ai.onnx.ml": 3})
        sample = x[:8]
        sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input": sample})
        _check_against_sklearn(name, estimator, sample, got)
        with tempfile.TemporaryDirectory(dir=family, prefix=f".{name}-") as tmp:
            staged = Path(tmp) / name
            (staged / "test_data_set_0").mkdir(parents=True)
            (staged / "model.onnx").write_bytes(onx.SerializeToString())
            corpus.write_value(staged / "test_data_set_0" / "input_0.pb", sample, "input")
            for i, (out, value) in enumerate(zip(sess.get_outputs(), got)):
                corpus.write_value(staged / "test_data_set_0" / f"output_{i}.pb", value, out.name)
            tags = corpus.model_tags(onx) + ["sklearn:" + type(estimator).__name__]
            corpus.write_meta(staged, "sklearn", name, f"scikit-learn + skl2onnx ({type(estimator).__name__}, "
                              f"options {options or 'default'})", tags,
                              "expected outputs: onnxruntime's, checked against scikit-learn's predictions")
            added += corpus._install(staged, family / name)
    return added


def _check_against_sklearn(name: str, estimator, x, got) -> None:
    expected = estimator.predict(x)
    first = np.asarray(got[0]).reshape(expected.shape)
    if expected.dtype.kind in "fc":
        ok = np.allclose(first, expected, atol=1e-4, rtol=1e-4)
    else:
        ok = np.array_equal(first, expected)
    if not ok:
        raise corpus.CorpusError(f"sklearn/{name}: onnxruntime's predictions differ from scikit-learn's")
