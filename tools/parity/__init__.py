"""Step-for-step training parity of our fine-tuning heads with the reference implementation
(Hugging Face transformers on PyTorch, CPU). `cases` builds both sides of every head from the
same weights and batches; `harness` trains them with one recipe and compares. Needs the
`reference` extra (torch, transformers); `python -m tools.training_parity` prints the table.
"""
