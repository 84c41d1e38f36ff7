"""One place that builds a model family's tokenizer from its vocabulary files.

Data creation, fine-tuning and export all need "the tokenizer for BERT or GPT-1 from these
files"; the tokenizer modules are imported on call so that importing this stays cheap.
"""
from tfmodels.architectures import check_input_format


def load_tokenizer(input_format: str, vocab_file: str = "", encoder_file: str = "",
                   merges_file: str = "", lower_case: bool = True):
    """WordPieceTokenizer (BERT: vocab_file) or GptBpeTokenizer (GPT-1: encoder + merges)."""
    if check_input_format(input_format) == "bert":
        if not vocab_file:
            raise ValueError("a BERT model needs its WordPiece vocabulary: pass vocab_file")
        from tfmodels.tokenizers.wordpiece import WordPieceTokenizer
        return WordPieceTokenizer(vocab_file, lower_case=lower_case)
    if not (encoder_file and merges_file):
        raise ValueError("a GPT-1 model needs its BPE files: pass bpe_encoder_file and "
                         "bpe_merges_file")
    from tfmodels.tokenizers.gpt_bpe import GptBpeTokenizer
    return GptBpeTokenizer(encoder_file, merges_file)
