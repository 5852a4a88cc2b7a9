"""Score conversations with a saved reward model using transformers alone (no synpref import).

Run by tests/rm/test_rm_saving.py in this environment and in one with transformers 4.51, so it
must work on both: `python plain_transformers_scores.py MODEL_DIR CONVERSATIONS.json` prints a
JSON list of rewards. Decoders: the Skywork-Reward-V2 model-card recipe (render with the chat
template, strip a leading BOS token, tokenize, logits[0][0]); encoders (no chat template): the
text pair "Role: content" blocks / the reply.
"""

import json
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def encoder_pair(conversation):
    prompt = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in conversation[:-1])
    return prompt, conversation[-1]["content"]


def main(model_dir, conversations_path):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, torch_dtype=torch.float32)
    model.eval()
    rewards = []
    for conversation in json.load(open(conversations_path)):
        if tokenizer.chat_template:
            text = tokenizer.apply_chat_template(conversation, tokenize=False)
            if tokenizer.bos_token is not None and text.startswith(tokenizer.bos_token):
                text = text[len(tokenizer.bos_token):]
            inputs = tokenizer(text, return_tensors="pt")
        else:
            inputs = tokenizer(*encoder_pair(conversation), return_tensors="pt")
        with torch.no_grad():
            rewards.append(model(**inputs).logits[0][0].item())
    print(json.dumps(rewards))


if __name__ == "__main__":
    main(*sys.argv[1:3])
