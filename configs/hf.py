"""A HuggingFace model directory as it is: GPT-2 continues prompts, Marian and T5 translate and
are scored, with the directory's own weights and tokenizer and seqjax's decoding.

  echo "The meaning of life is" | python -m seqjax.main --config=configs/hf.py \
      --config.init_from=hf:PATH_TO_GPT2 --workdir=workdirs/gpt2 --mode=generate \
      --config.generate.temperature=0
  python -m seqjax.main --config=configs/hf.py --config.init_from=hf:PATH_TO_OPUS_MT \
      --workdir=workdirs/opus_mt --mode=translate < source.txt
  python -m seqjax.main --config=configs/hf.py --config.init_from=hf:PATH_TO_OPUS_MT \
      --workdir=workdirs/opus_mt --mode=evaluate --config.data.test_path=test.tsv

model.name='hf' builds whatever init_from's directory holds (seqjax/hf: its config.json decides
the class and every hyper-parameter) and runs its task: a language model (gpt2) for
--mode=generate, an encoder-decoder (marian, t5) for --mode=translate and --mode=evaluate (the
test file: `source<TAB>target` lines, data.test_path, scored with sacreBLEU and the
compound-split BLEU). A workdir without checkpoints uses the directory's weights; training
(--mode=train) fine-tunes them on data.train_path/eval_path like configs/parallel_text.py, and the
modes then use the workdir's checkpoints. Translation: beam 4, log P / |Y|^1 (`eval.
length_penalty_form='power'`, transformers' and OPUS-MT's setting; 'gnmt' is the paper's), the
directory's banned ids (generation_config.json) never output; generation: greedy or sampled by the
`generate` section. BERT and ViT directories fine-tune through their own configs
(configs/bert_finetune.py, configs/vit_cifar10.py) with init_from=hf:PATH.
"""

from seqjax import config as config_lib
from seqjax import errors
from seqjax import models


def get_config(arg: str | None = None):
  if arg is not None:
    raise errors.UserError(f'Unknown config argument {arg!r}; configs/hf.py takes none (the '
                           'model comes from config.init_from=hf:PATH).')
  config = config_lib.base_config(model=models.FROM_HF, data='parallel_text')
  config.data.update(max_source_length=512, max_target_length=512)
  config.eval.update(beam_size=4, length_penalty=1.0, length_penalty_form='power',
                     max_length_margin=50, batch_size=16, num_eval_batches=-1,
                     num_plot_examples=0)
  config.generate.update(max_new_tokens=32)
  config.label_smoothing = 0.0
  config.num_train_steps = 1000
  config.optimizer.update(learning_rate=5e-5, warmup_steps=100)
  return config
