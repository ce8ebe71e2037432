"""Dataset-level analyses of trained models (layer 5): what a model learned, shown on the data.

- ``prompts``: DpDNet's cancer-specific prompts embedded in 2-D (t-SNE / PCA) with their separation;
- ``mastpro``: MAST-Pro's parameters per part and expert usage per task over a cohort;
- ``h2aseg``: H2ASeg's TAMW channel weights per decoder level (the paper's Table 3);
- ``gcis``: a gCIS model exported as the single-path checkpoint of one task.

Model files (``unipet.models``) hold networks only; anything that takes a cache, a predictor or a run folder is here.
"""
