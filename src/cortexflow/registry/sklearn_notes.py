"""Why some of scikit-learn's estimator checks fail for CortexFlow's decoders.

Each method's spec names the checks its estimator is known to fail
(``sklearn_xfail``), with one of these reasons; the test suite runs
``parametrize_with_checks`` over every registered method and treats those as
strict expected failures (a check that starts passing fails the suite).
"""

__all__ = ["FLOAT32", "CLIPPED", "IMAGES_ONLY", "NON_IMAGE_TARGET_CHECKS", "TRANSFORMER_CHECKS", "UNDERTRAINED", "images_only"]

FLOAT32 = (
    "asserts float64 predictions; the decoders return float32 images by design (the networks compute "
    "in float32, and float64 would only double the memory of reconstructions)"
)
CLIPPED = (
    "asserts R^2 > 0.5 on a toy regression whose targets are not images; this decoder clips its "
    "predictions to [0, 1], the pixel range, so it cannot fit targets outside it"
)
IMAGES_ONLY = (
    "fits a toy target that is not an image in [0, 1] (1-D y, or values outside [0, 1]); this decoder "
    "draws images through a [0, 1] output layer and refuses such targets with a DataValidationError"
)
UNDERTRAINED = (
    "asserts R^2 > 0.5 on the training data of a toy regression; two epochs of the test configuration "
    "are not enough training"
)
#: the transformer checks (decoders whose ``transform`` returns their embedding): they fit non-image targets too
TRANSFORMER_CHECKS = ("check_transformer_data_not_an_array", "check_transformer_general",
                      "check_transformer_preserve_dtypes")
#: the checks that fit a non-image target: an image-only decoder refuses every one of them
NON_IMAGE_TARGET_CHECKS = (
    "check_fit_score_takes_y", "check_estimators_overwrite_params", "check_dont_overwrite_parameters",
    "check_estimators_fit_returns_self", "check_readonly_memmap_input", "check_n_features_in_after_fitting",
    "check_positive_only_tag_during_fit", "check_estimators_dtypes", "check_dtype_object",
    "check_pipeline_consistency", "check_estimators_nan_inf", "check_estimators_pickle",
    "check_f_contiguous_array_estimator", "check_regressors_train", "check_regressor_multioutput",
    "check_regressors_no_decision_function", "check_supervised_y_2d", "check_regressors_int",
    "check_methods_sample_order_invariance", "check_methods_subset_invariance", "check_fit2d_1feature",
    "check_dict_unchanged", "check_fit_idempotent", "check_fit_check_is_fitted", "check_n_features_in",
    "check_fit2d_predict1d",
)


def images_only(*extra: str, but: tuple[str, ...] = ()) -> dict[str, str]:
    """Every non-image-target check (less ``but``) plus ``extra`` checks, each with :data:`IMAGES_ONLY`."""
    return dict.fromkeys([c for c in NON_IMAGE_TARGET_CHECKS if c not in but] + list(extra), IMAGES_ONLY)
