"""The outputs of a causal LM directory using transformers alone (no synpref import).

Run by tests/rm/test_transformers_451.py in this environment and in one with transformers 4.51:
`python base_model_logits.py MODEL_DIR CONVERSATIONS.json` prints, per conversation, the token
ids of its chat-template rendering and the last position's logits over the first 512 ids, and
the id of the largest logit over the whole vocabulary.
"""

import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main(model_dir, conversations_path):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    model.eval()
    outputs = []
    for conversation in json.load(open(conversations_path)):
        text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
        outputs.append({"ids": ids, "logits": logits[:512].tolist(), "argmax": int(logits.argmax())})
    print(json.dumps(outputs))


if __name__ == "__main__":
    main(*sys.argv[1:3])
