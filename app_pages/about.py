"""About: the localist/distributed spectrum for a class, with the way into class mode's tour."""
import streamlit as st

import ui
from ui import tour

s = ui.page_setup("About: from localist to distributed attention")
st.info(f"**Teaching with this?** Open [class mode](./?mode={tour.CLASS}): large type, the "
        f"heatmap filling the screen and a {len(tour.TOUR)}-step tour with Back and Next, each "
        "step setting the model, the dial and the head it talks about.")

st.markdown("""
**What is attention?** When a language model reads a word, each layer decides how much to
*look back* at every earlier word. Those weights — one row of the heatmap per word — add up to 1.

**Localist or distributed?** In a *distributed* model a word may spread its attention over the
whole text: flexible, but hard to read. In a *localist* model the text is cut into small
**blocks** (here: 5 words) and a word looks mostly inside its own block and, in the papers'
proposal, at a few **anchor** words — the words of the block after which the next word is most
predictable. That is easy to read, and it is what the papers by J. Diederich (2025) propose.

**The dials.**
- **λ (locality)** moves a model along the spectrum. At λ = 0 it is an ordinary transformer.
  As λ rises, every weight that would cross a block boundary is multiplied by (1 − λ)^(β/τ); at
  λ = 1 attention stays inside the block exactly.
- **τ (temperature)** sharpens (τ < 1) or flattens (τ > 1) each row of weights.
- **γ (rule strength)** adds a bonus to the anchors, so you can watch a hand-written rule take over.

**Honesty.** Our models are *causal*: a word never sees the words after it, as in real text
generation. The papers report a perplexity of 4.65 on WikiText-2, which no causal model of
this size reaches (ours sit in the hundreds). Attention that peeks at later words of its own
block sees the very words it must predict; our reproduction notes report how such a leak gives
numbers like theirs.

**What to notice.** A causal model is already quite local: it puts about half its attention
in its own block, mostly because recent words are near. So the Explorer always shows controls
next to in-block mass — a sliding window of the last 5 words, blocks shifted by 2, and
uniform attention. Localist structure is what exceeds those. The same holds for anchors: in our
models they draw no more attention than uniform attention inside the block would give them
(the lift over that control is about zero, in our reproduction notes), so the papers' anchors
are their proposal, not yet our finding.

**What locality costs.** The *Tradeoff* page answers from a study with three training seeds
per setting. Locality rises gradually at small λ, at little cost in perplexity; perplexity
jumps only when the last cross-block attention goes, by about a third. Ten questions were
fixed in advance and get their verdicts, corrected for being asked together, once five seeds
have trained; until then these are a three-seed study's readings, not findings. Which blocks
predict best at the same context (punctuation, the bigram test below, or the same lengths at
random places) is among those questions and is not settled yet.
""")

st.subheader("Where do the blocks come from?")
st.markdown(r"""
The sidebar's **Blocks** menu re-cuts the text at inference; a checkpoint can also be trained
with any of the partitions.

- **Fixed:** every 5 words (or the size you pick).
- **Punctuation:** a block ends at a sentence or clause mark (`. , ; : ! ?`, a dash or a line
  end), or after 8 words, whichever comes first.
- **Random:** blocks as long as punctuation's, on the same mix of lengths, but ending at
  arbitrary places. It is the control that tells whether *where* punctuation cuts matters, or
  only how long its blocks are.
- **Recruited** (the third paper's idea): reading left to right, the block so far is "the one
  block". At each new word the model asks whether *recruiting* a new block for it saves bits,
  in the language of description length (how many bits it takes to write the text down):

  **gain = L_continue − L_new − C** (bits); a block starts exactly where gain > 0.

  - **L_continue = −log₂((c + α·p) / (n + α))**: the bits to write the word inside the current
    block, which keeps its own running word counts. n is how many words the block has so far,
    c how many of them are this same word, α (alpha, here 1) how much the block trusts p over
    its own counts.
  - **L_new = −log₂ p**: the bits to write the word as the first word of a fresh block, which
    has no counts yet.
  - **p**: how common the word is, from a Zipf law over the vocabulary (the 1st most common
    word gets 1/H of the mass, the 2nd 1/(2H), …; H makes it sum to 1).
  - **C**: the price of the new boundary itself (here 2.5 bits). Every position carries a
    yes/no flag "a block starts here"; with a prior probability q of "yes", a split pays
    −log₂ q and continuing pays −log₂(1 − q), so C = log₂((1 − q)/q).

  So a new word splits off once the block is long enough (n > α(2^C − 1), here 5 words), and a
  word the block has already seen is cheap to keep: repetition holds a block together. The
  decision never looks at later words, so a recruited model stays causal. The *Rules & blocks*
  page draws this test at every position of your text and lists the bits each boundary saved.
  For a word new to its block p cancels out of the gain: this test never reads the words
  (give every word another id and the blocks stay the same), only the block's length.
- **Recruited (bigram)** (`bigram`): the same test, under a model that knows which words go
  together, so it reads the words.

  **gain = L_continue − L_new − C** (bits); a block starts exactly where gain > 0, and a block
  of 8 words cannot grow: its gain is +∞.

  - **L_continue = −log₂((c + α·P_KN) / (n + α))**: the bits to write the word inside the
    current block. n and c are as above; P_KN is the probability of this word right after the
    previous one (always in the block) under a **Kneser–Ney bigram model** of WikiText-2's
    training split: a pair's count less a discount D = 0.75, over the previous word's count,
    plus the discounted mass spread by how many different words each word follows. Pairs
    seen fewer than three times are not stored (a cap of 131,072 pairs, applied so that pairs
    seen equally often are kept or dropped together, whatever their word ids): they count as
    unseen and get only the spread mass, which takes in their counts so that the
    probabilities after each word still sum to 1.
  - **L_new = −log₂ P_uni**: the bits to write the word as a fresh block's first word, with
    no previous word: its add-one frequency in the training split, (count + 1)/(N + V).
  - **α** (here 1) and **C**, the boundary's price (here 3.75 bits, chosen so that a query
    sees about as many keys of its own block as under punctuation: 3.92 against 3.91).

  For a word new to its block, gain = log₂((n + α)/α) − PMI − C, where **PMI** =
  log₂(P_KN / P_uni) is how much the previous word predicts this one. Words that belong
  together ("United States", "of the") stay in one block; a word its neighbour does not
  predict starts one sooner. The model's table travels in its checkpoint; the *Rules & blocks*
  page draws this test too, with each term, using the shipped table for checkpoints trained
  otherwise.

**Rules.** γ pulls every query toward its block's anchors. On *Rules & blocks* you can write
your own rule, "words matching X attend to words matching Y" (a word list or a regular
expression), set its strength and watch fidelity to its targets and the text's perplexity move.
""")

st.caption(f"Current dials: λ={s.locality:g}, τ={s.attn_temperature:g}, γ={s.rule_strength:g}.")
