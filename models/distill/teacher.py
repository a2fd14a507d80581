"""Teacher VLA ("large for this machine"): ViT encoder over the camera image + a transformer decoder that writes the
commentary and then predicts the 20 path points and 10 speed waypoints (language in the loop, SimLingo style).

Decoder sequence: [cond(speed, target points)] + commentary tokens (causal) + 30 waypoint query tokens (which see the
whole prefix, i.e. the commentary, and each other); every position cross-attends to the ViT tokens.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from data import ACTIONS, IMG_H, IMG_W, N_PATH, N_SPEED, OBJECTS, TEXT_LEN, VOCAB, BOS, EOS
from layers import WP_SCALE, DecoderBlock, EncoderBlock, cond_features


def conv_stem(dim: int, patch: int) -> nn.Sequential:
    """Stride-2 3×3 convolutions down to the patch grid, instead of one patch×patch convolution ("early convolutions
    help transformers see better", Xiao et al. 2021). Why: the patchify-stem teacher, trained from scratch on this
    machine's ~24 000 frames, learnt to plan from the speed and the target points alone -- replacing its camera image
    by zeros moved its waypoints by 0.06 m, and on the students' states its plan kept going where the expert brakes.
    Tried once (2026-12-01, run `cs`): the conv-stem teacher's plan follows the image more (0.62 m at a red light),
    but after two DAgger rounds it drove worse (66.3 vs 79.9 held-out), so no preset sets it (models/distill/README.md,
    "The teacher did not look")."""
    n = patch.bit_length() - 1
    if 2**n != patch:
        raise ValueError(f"conv stem: patch {patch} is not a power of two")
    widths = [3] + [max(dim // 2 ** (n - 1 - i), 16) for i in range(n - 1)]
    layers: list[nn.Module] = []
    for c_in, c_out in zip(widths, widths[1:]):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    layers.append(nn.Conv2d(widths[-1], dim, 3, stride=2, padding=1))
    return nn.Sequential(*layers)


class PerceptionHead(nn.Module):
    """Mean- and max-pooled visual tokens -> object logits, action logits, target speed, object distance."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.n_obj, self.n_act = len(OBJECTS), len(ACTIONS)
        self.mlp = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, self.n_obj + self.n_act + 2))

    def forward(self, vis: torch.Tensor) -> dict:
        y = self.mlp(torch.cat([vis.mean(1), vis.amax(1)], dim=-1))
        a, b = self.n_obj, self.n_obj + self.n_act
        return {"object": y[:, :a], "action": y[:, a:b], "target_speed": y[:, b], "object_dist": y[:, b + 1]}


class Teacher(nn.Module):
    def __init__(self, dim: int = 192, depth: int = 6, heads: int = 3, dec_depth: int = 3, patch: int = 16,
                 vocab: int = len(VOCAB), text_len: int = TEXT_LEN, lm_aligned: bool = False,
                 stem: str = "patch", aux: bool = False, speed_cap: float | None = None) -> None:
        super().__init__()
        if stem not in ("patch", "conv"):
            raise ValueError(f"teacher stem {stem!r}: expected 'patch' or 'conv'")
        self.cfg = dict(dim=dim, depth=depth, heads=heads, dec_depth=dec_depth, patch=patch, vocab=vocab,
                        text_len=text_len, lm_aligned=lm_aligned, stem=stem, aux=aux, speed_cap=speed_cap)
        self.speed_cap = speed_cap  # layers.cond_features: what the plan may read of the ego speed
        # lm_aligned=False is the first teachers' (bundled, 2026-11-25) language head: the logits of decoder position j
        # (cond, then text token j-1) were trained to predict text token j+1, so each word was predicted without
        # seeing the word just before it. True: the position of text token j predicts token j+1 (the usual shift).
        self.lm_aligned = lm_aligned
        self.grid = (IMG_H // patch, IMG_W // patch)
        n_tok = self.grid[0] * self.grid[1]
        self.patch = conv_stem(dim, patch) if stem == "conv" else nn.Conv2d(3, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(1, n_tok, dim) * 0.02)
        self.enc = nn.ModuleList([EncoderBlock(dim, heads) for _ in range(depth)])
        self.enc_norm = nn.LayerNorm(dim)
        self.cond = nn.Linear(5, dim)
        self.tok = nn.Embedding(vocab, dim)
        self.n_q = N_PATH + N_SPEED
        self.queries = nn.Parameter(torch.randn(1, self.n_q, dim) * 0.02)
        self.dec_pos = nn.Parameter(torch.randn(1, text_len, dim) * 0.02)  # cond + text positions; queries carry their own
        self.dec = nn.ModuleList([DecoderBlock(dim, heads) for _ in range(dec_depth)])
        self.dec_norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab)
        self.wp_head = nn.Linear(dim, 2)
        self.text_len = text_len
        # aux: a head that reads only the visual tokens and names what the expert reacts to (see `perceive`).
        self.aux_head = PerceptionHead(dim) if aux else None

    @property
    def dim(self) -> int:
        return self.cfg["dim"]

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """[B,3,128,256] -> visual tokens [B, N, dim] (N = 8x16 for patch 16)."""
        x = self.patch(image).flatten(2).transpose(1, 2) + self.pos
        for blk in self.enc:
            x = blk(x)
        return self.enc_norm(x)

    def perceive(self, vis: torch.Tensor) -> dict:
        """From the visual tokens alone: the expert's object and action logits, its target speed (m/s / 10) and the
        object's distance (m / 30). A training signal only (not exported): the patchify teacher planned from its
        speed and the commentary and its image moved its plan by 0.06 m (README, "The teacher did not look"); this
        asks its encoder to see what the plan depends on."""
        if self.aux_head is None:
            raise ValueError("this teacher has no perception head (built with aux=False)")
        return self.aux_head(vis)

    def _mask(self, n_text: int, device) -> torch.Tensor:
        p = 1 + n_text
        s = p + self.n_q
        m = torch.full((s, s), -1e9, device=device)
        m[:p, :p] = torch.triu(torch.full((p, p), -1e9, device=device), diagonal=1)
        m[p:, :] = 0.0  # queries see the prefix and each other
        return m

    def decode(self, vis, speed, target_points, text_in):
        """text_in [B, T] token ids (teacher forcing). Returns logits [B,T,V], queries [B,30,dim], wps [B,30,2]."""
        b, t = text_in.shape
        prefix = torch.cat([self.cond(cond_features(speed, target_points, self.speed_cap)).unsqueeze(1), self.tok(text_in)], dim=1)
        x = torch.cat([prefix + self.dec_pos[:, : 1 + t], self.queries.expand(b, -1, -1)], dim=1)
        mask = self._mask(t, x.device)
        for blk in self.dec:
            x = blk(x, vis, mask)
        x = self.dec_norm(x)
        # aligned: the position of text token i predicts token i+1; legacy: position i (cond + i tokens) does
        logits = self.lm_head(x[:, 1 : 1 + t] if self.lm_aligned else x[:, :t])
        q = x[:, 1 + t:]
        return logits, q, self.wp_head(q) * WP_SCALE

    def forward(self, image, speed, target_points, text_in):
        vis = self.encode(image)
        logits, q, wps = self.decode(vis, speed, target_points, text_in)
        return {"features": vis, "logits": logits, "queries": q, "path": wps[:, :N_PATH],
                "speed_wps": wps[:, N_PATH:]}

    @torch.no_grad()
    def generate(self, image, speed, target_points, max_len: int | None = None):
        """Greedy commentary, then waypoints conditioned on it. Returns (token ids [B,T], path, speed_wps)."""
        max_len = max_len or self.text_len - 1
        vis = self.encode(image)
        b = image.shape[0]
        text = torch.full((b, 1), BOS, dtype=torch.long, device=image.device)
        done = torch.zeros(b, dtype=torch.bool, device=image.device)
        for _ in range(max_len - 1):
            logits, _, _ = self.decode(vis, speed, target_points, text)
            nxt = logits[:, -1].argmax(-1)
            nxt = torch.where(done, torch.zeros_like(nxt), nxt)
            text = torch.cat([text, nxt[:, None]], dim=1)
            done |= nxt == EOS
            if bool(done.all()):
                break
        pad = max_len - text.shape[1]
        if pad > 0:  # waypoint queries saw PAD-filled text of fixed length in training
            text = torch.cat([text, torch.zeros(b, pad, dtype=torch.long, device=text.device)], dim=1)
        _, _, wps = self.decode(vis, speed, target_points, text)
        return text, wps[:, :N_PATH], wps[:, N_PATH:]

    def generate_cached(self, image, speed, target_points, max_len: int | None = None):
        """The same greedy commentary-then-waypoints as `generate`, with a KV cache and a fixed number of steps (no
        early exit: after <eos> it writes PAD, as the waypoint queries saw in training), so it traces into one static
        ONNX graph -- the teacher driving language-in-the-loop, as SimLingo does. The cross-attention keys/values of
        the visual tokens are computed once; every step runs only the new token through the decoder.
        Returns (token ids [B, max_len], path, speed_wps, visual tokens)."""
        max_len = max_len or self.text_len - 1
        vis = self.encode(image)
        b = image.shape[0]
        mem = [(blk.cross.split(blk.cross.k(vis)), blk.cross.split(blk.cross.v(vis))) for blk in self.dec]
        cache: list = [None] * len(self.dec)

        def run(x):
            """x [B, n, dim]: new positions that see every cached position and each other (no causal mask is
            needed: new positions are either one token or the waypoint queries, which see everything)."""
            for i, blk in enumerate(self.dec):
                att = blk.self_attn
                h = blk.n1(x)
                k, v = att.split(att.k(h)), att.split(att.v(h))
                if cache[i] is not None:
                    k, v = torch.cat([cache[i][0], k], dim=2), torch.cat([cache[i][1], v], dim=2)
                cache[i] = (k, v)
                x = x + att.attend(att.split(att.q(h)), k, v)
                x = x + blk.cross.attend(blk.cross.split(blk.cross.q(blk.n2(x))), *mem[i])
                x = x + blk.mlp(blk.n3(x))
            return x

        h = run(self.cond(cond_features(speed, target_points, self.speed_cap)).unsqueeze(1) + self.dec_pos[:, :1])
        pending = self.lm_head(self.dec_norm(h))[:, -1]  # lm_aligned=False: the cond position predicts word 1
        tok = torch.full((b, 1), BOS, dtype=torch.long, device=image.device)
        toks = [tok]
        done = torch.zeros(b, 1, dtype=torch.bool, device=image.device)
        for p in range(max_len - 1):
            h = run(self.tok(tok) + self.dec_pos[:, 1 + p : 2 + p])
            logits = self.lm_head(self.dec_norm(h))[:, -1]
            if not self.lm_aligned:  # position j predicts text token j + 1 (see `decode`): one position behind
                logits, pending = pending, logits
            nxt = logits.argmax(-1, keepdim=True)
            nxt = torch.where(done, torch.zeros_like(nxt), nxt)
            done = done | (nxt == EOS)
            toks.append(nxt)
            tok = nxt
        # The last token is in `toks` but not yet in the cache; the queries must see all max_len text positions.
        run(self.tok(tok) + self.dec_pos[:, max_len : max_len + 1])
        q = self.dec_norm(run(self.queries.expand(b, -1, -1)))
        wps = self.wp_head(q) * WP_SCALE
        return torch.cat(toks, dim=1), wps[:, :N_PATH], wps[:, N_PATH:], vis


def save_exported(teacher: Teacher, path: str, vocab: list[str] | None) -> None:
    """An export's teacher.pt: config, weights and the vocabulary its language head was trained with."""
    torch.save({"cfg": dict(teacher.cfg), "state": teacher.state_dict(), "vocab": vocab}, path)


def load_exported(path: str) -> tuple[Teacher, dict]:
    """The teacher of an export's teacher.pt, in eval mode, and the file's dict (its `vocab` may be missing or None:
    files from before 2026-11-26 did not carry one)."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    teacher = Teacher(**ck["cfg"])
    teacher.load_state_dict(ck["state"])
    return teacher.eval(), ck
