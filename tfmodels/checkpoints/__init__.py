"""Checkpoint converters: real weights in and out of our BERT and GPT-1.

Every format module maps between its own tensor names/layouts and our *canonical* layout:
a dict keyed by the names `slots.bert_slots` / `slots.gpt_slots` give our variables, with
arrays already in our shapes (fused [hidden, 3 * hidden] QKV kernels, [in, out] dense
kernels). `slots.assign` checks everything before writing a single variable.

  hf_bert         Hugging Face BERT (safetensors + config.json + vocab.txt), both ways
  tf1_bert        google-research/bert TF1 checkpoints, in
  openai_gpt      the original OpenAI GPT-1 release (params_shapes.json + params_*.npy), in
  hf_gpt          Hugging Face openai-gpt safetensors, in
  keras_hub_bert  keras-hub BertBackbone weights, both ways
"""
