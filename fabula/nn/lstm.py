"""LSTM encoder and decoder of sentences, shared by the sentence stories and their guides."""

from __future__ import annotations

import torch
from torch import nn

from fabula.errors import SettingsError
from fabula.nn.output import FullSoftmax, output_layer


def word_embedding(vocab_size: int, embed_dim: int) -> nn.Embedding:
    """Word embeddings started uniform in [-0.1, 0.1] (Zaremba et al. 2014; Kim et al. 2018), not at
    torch's N(0, 1): rows of unit-variance noise are slow to move under SGD steps of the size that
    trains the LSTM, and rare words would keep their random vectors."""
    embed = nn.Embedding(vocab_size, embed_dim)
    nn.init.uniform_(embed.weight, -0.1, 0.1)
    return embed


def embed_words(embed: nn.Embedding, words: torch.Tensor) -> torch.Tensor:
    """Embeddings of word ids ``[..., T]``, or of weights over the words ``[..., T, V]`` (their
    weighted sum of the word vectors)."""
    return words @ embed.weight if words.is_floating_point() else embed(words)


class LSTMDecoder(nn.Module):
    r"""An autoregressive LSTM over word ids, optionally conditioned on a latent vector ``z``.

    With ``latent_dim > 0``, ``z`` sets the initial state, :math:`(h_0, c_0) = (\tanh(W_h z), W_c z)`,
    and with ``z_every_step`` is also concatenated to every input embedding (Bowman et al. 2016
    use the first; Kim et al. 2018 both). ``output`` names the output layer :math:`p(w \mid h)`
    (:mod:`fabula.nn.output`: ``full``, ``class``, ``adaptive``, ``sampled``, ``mos``, ``kerbs``);
    ``tie`` shares the input embedding with the full softmax's weights (then ``embed_dim`` must
    equal ``hidden_dim``).

    Leading dimensions of the inputs and ``z`` (particles, beams) broadcast and are flattened into
    one batch of sequences.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        hidden_dim: int,
        latent_dim: int = 0,
        z_every_step: bool = True,
        tie: bool = False,
        dropout: float = 0.0,
        output: str = "full",
    ):
        super().__init__()
        if tie and embed_dim != hidden_dim:
            raise SettingsError(
                f"tied embeddings need embed_dim == hidden_dim, got {embed_dim} != {hidden_dim}"
            )
        self.vocab_size, self.latent_dim, self.z_every_step = (
            vocab_size,
            latent_dim,
            z_every_step and latent_dim > 0,
        )
        self.embed = word_embedding(vocab_size, embed_dim)
        in_dim = embed_dim + (latent_dim if self.z_every_step else 0)
        self.lstm = nn.LSTM(in_dim, hidden_dim, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.out = output_layer(output, hidden_dim, vocab_size)
        if tie:
            if type(self.out) is not FullSoftmax:
                raise SettingsError(f"tied embeddings need the full softmax output layer, not {output!r}")
            self.out.weight = self.embed.weight
        if latent_dim > 0:
            self.init_state = nn.Linear(latent_dim, 2 * hidden_dim)

    def start(self, z: torch.Tensor | None, batch: int) -> tuple | None:
        """The initial LSTM state for ``batch`` sequences (``None``: zeros)."""
        if z is None or self.latent_dim == 0:
            return None
        h, c = self.init_state(z.reshape(-1, self.latent_dim)).chunk(2, -1)
        return torch.tanh(h).unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()

    def step(self, inputs: torch.Tensor, state, z: torch.Tensor | None = None):
        """The LSTM's output states ``[N, T, H]`` for inputs ``[N, T]`` from ``state`` (dropout
        applied, as the output layer reads them); returns ``(hidden, state)``. Inputs may also be
        weights over the words ``[N, T, V]`` (one-hot, or a relaxed one-hot: their embedding is
        the weighted sum of the words' embeddings, as the Gumbel-softmax generator feeds them)."""
        x = self.dropout(embed_words(self.embed, inputs))
        if self.z_every_step:
            x = torch.cat([x, z.reshape(-1, 1, self.latent_dim).expand(-1, x.shape[1], -1)], -1)
        h, state = self.lstm(x, state)
        return self.dropout(h), state

    def hidden(self, inputs: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced output states ``[..., T, H]`` for ``inputs [..., T]`` and ``z [..., K]``,
        their leading dimensions (particles, beams, batch) broadcast against each other."""
        steps = inputs.shape[-1]
        if z is None or self.latent_dim == 0:
            lead = inputs.shape[:-1]
            return self.step(inputs.reshape(-1, steps), None)[0].reshape(*lead, steps, -1)
        lead = torch.broadcast_shapes(inputs.shape[:-1], z.shape[:-1])
        flat_inputs = inputs.expand(*lead, steps).reshape(-1, steps)
        flat_z = z.expand(*lead, self.latent_dim).reshape(-1, self.latent_dim)
        h, _ = self.step(flat_inputs, self.start(flat_z, flat_inputs.shape[0]), flat_z)
        return h.reshape(*lead, steps, -1)

    def forward(self, inputs: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced next-word log-probabilities ``[..., T, V]`` (normalised, so they serve
        wherever logits do) for ``inputs [..., T]`` and ``z [..., K]``."""
        return self.out.log_probs(self.hidden(inputs, z))


class LSTMEncoder(nn.Module):
    """The last hidden state of an LSTM read over ``w_1 .. w_n <eos>`` (``[B, hidden_dim]``)."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int):
        super().__init__()
        self.embed = word_embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        self.out_features = hidden_dim

    def forward(self, batch) -> torch.Tensor:
        h, _ = self.lstm(self.embed(batch.targets))
        # a unidirectional LSTM's output at step t depends on steps <= t only: padding is ignored
        return h[torch.arange(batch.size, device=h.device), batch.lengths - 1]


class BagOfWordsEncoder(nn.Module):
    """An MLP over the word counts of a sentence (``<eos>`` and padding excluded)."""

    def __init__(self, vocab_size: int, hidden_dim: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.mlp = nn.Sequential(nn.Linear(vocab_size, hidden_dim), nn.Tanh())
        self.out_features = hidden_dim

    def forward(self, batch) -> torch.Tensor:
        words = torch.where(batch.mask, batch.targets, 0)
        counts = torch.zeros(batch.size, self.vocab_size, device=words.device)
        counts.scatter_add_(1, words, torch.ones_like(words, dtype=counts.dtype))
        counts[:, :3] = 0  # <pad> <bos> <eos> are not words
        return self.mlp(counts)
