"""A dishonest coordinator, played by the test: substituted keys, inconsistent survivor sets,
replayed and out-of-order stages. Every node refuses, and says why."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from deploy.devcerts import make_dev_pki
from node.secure import SecAggRefused
from privacy.secagg import keys as kx
from protocols.identity import Signer
from protocols.secagg import (
    STAGE_ORDER,
    EncryptedShares,
    MaskedVector,
    NodeSignature,
    RevealedShares,
    SecAggConsistency,
    SecAggMaskedInput,
    SecAggRequest,
    SecAggSetup,
    SecAggShareKeys,
    SecAggUnmask,
    SignedKeys,
    keys_statement,
)
from tests.secagg_harness import Federation, make_federation, query

RID = "run/secure#test"
IDS = [f"inst-{i:03d}" for i in range(6)]


@pytest.fixture
def fed(tmp_path: Path) -> Federation:
    return make_federation(tmp_path, 6, length=5)


def setup_msg(n_min: int = 3) -> SecAggSetup:
    # Six nodes, all-to-all (degree 5), a strict majority (3) to recover anyone's secrets.
    return SecAggSetup(query(5), tuple(IDS), n_min=n_min, degree=5, threshold=3)


def ask(fed: Federation, node: str, stage: object) -> object:
    return fed.clients[node].handle(SecAggRequest(RID, stage))  # type: ignore[arg-type]


def advertise(fed: Federation) -> dict[str, SignedKeys]:
    out = {}
    for i in IDS:
        k = ask(fed, i, setup_msg())
        assert isinstance(k, SignedKeys)
        out[i] = k
    return out


def share(fed: Federation, keys: dict[str, SignedKeys]) -> dict[str, EncryptedShares]:
    out = {}
    for i in IDS:
        s = ask(fed, i, SecAggShareKeys(tuple(keys[j] for j in IDS if j != i)))
        assert isinstance(s, EncryptedShares)
        out[i] = s
    return out


def mask(fed: Federation, shares: dict[str, EncryptedShares]) -> dict[str, MaskedVector]:
    out = {}
    for i in IDS:
        inbox = tuple(e for s in shares.values() for e in s.shares if e.recipient == i)
        m = ask(fed, i, SecAggMaskedInput(tuple(IDS), inbox))
        assert isinstance(m, MaskedVector)
        out[i] = m
    return out


def through_masking(fed: Federation) -> tuple[dict[str, SignedKeys], dict[str, EncryptedShares]]:
    k = advertise(fed)
    s = share(fed, k)
    mask(fed, s)
    return k, s


# --- keys -------------------------------------------------------------------------------------


def test_substituted_mask_key_is_refused(fed: Federation) -> None:
    keys = advertise(fed)
    mine = kx.KeyPair.generate()  # the coordinator's own key, to sit in the middle
    forged = dataclasses.replace(keys["inst-001"], mask_key=mine.public)
    with pytest.raises(SecAggRefused, match="not signed by it") as err:
        ask(fed, "inst-000", SecAggShareKeys((forged, *(keys[j] for j in IDS[2:]))))
    assert "substituted" in err.value.message


def test_keys_signed_under_another_ca_are_refused(fed: Federation, tmp_path: Path) -> None:
    keys = advertise(fed)
    rogue = make_dev_pki(tmp_path / "rogue", ["inst-001"], ca_name="rogue CA")
    pair = rogue.nodes["inst-001"]
    signer = Signer.from_files("inst-001", pair.cert, pair.key)
    k = keys["inst-001"]
    forged = dataclasses.replace(
        k,
        certificate=signer.certificate_pem,
        signature=signer.sign(
            keys_statement(RID, "inst-001", k.encryption_key, k.mask_key, k.self_mask_commitment)
        ),
    )
    with pytest.raises(SecAggRefused, match="not issued by the sector CA"):
        ask(fed, "inst-000", SecAggShareKeys((forged, *(keys[j] for j in IDS[2:]))))


def test_keys_under_another_nodes_certificate_are_refused(fed: Federation) -> None:
    keys = advertise(fed)
    forged = dataclasses.replace(keys["inst-001"], certificate=keys["inst-002"].certificate)
    with pytest.raises(SecAggRefused, match="presented as 'inst-001'"):
        ask(fed, "inst-000", SecAggShareKeys((forged, *(keys[j] for j in IDS[2:]))))


def test_keys_of_a_non_neighbour_or_twice_are_refused(tmp_path: Path) -> None:
    fed = make_federation(tmp_path, 6, length=5)
    sparse = SecAggSetup(query(5), tuple(IDS), n_min=3, degree=2, threshold=2)
    keys = {i: ask(fed, i, sparse) for i in IDS}
    from privacy.secagg import graph

    g = graph.neighbours(RID, IDS, 2)
    stranger = next(j for j in IDS if j != "inst-000" and j not in g["inst-000"])
    with pytest.raises(SecAggRefused, match="not a neighbour"):
        ask(fed, "inst-000", SecAggShareKeys((keys[stranger],)))  # type: ignore[arg-type]


# --- survivor sets ----------------------------------------------------------------------------


def test_inconsistent_dropout_lists_are_caught(fed: Federation) -> None:
    through_masking(fed)
    victim = "inst-005"
    told_alive = IDS[:4]  # inst-000..003 are told inst-005 survived
    told_dropped = IDS[4:5]  # inst-004 is told it dropped (to get a share of its mask key)
    all_six = tuple(IDS)
    without = tuple(i for i in IDS if i != victim)
    sig_a = [ask(fed, i, SecAggConsistency(all_six)) for i in told_alive]
    sig_b = [ask(fed, i, SecAggConsistency(without)) for i in told_dropped]
    assert all(isinstance(s, NodeSignature) for s in sig_a + sig_b)
    # Group B has only 1 of the victim's 5 neighbours behind its story (3 needed), and the
    # other group's signatures are over another set: it refuses to reveal anything.
    for i in told_dropped:
        with pytest.raises(SecAggRefused, match="confirmed this survivor set"):
            ask(fed, i, SecAggUnmask(without, tuple(sig_a + sig_b)))  # type: ignore[arg-type]
    # Group A reveals self-mask shares only: the coordinator never holds both kinds.
    revealed = ask(fed, "inst-000", SecAggUnmask(all_six, tuple(sig_a)))  # type: ignore[arg-type]
    assert isinstance(revealed, RevealedShares)
    assert all(s.self_mask for s in revealed.shares)


def test_unmasking_a_set_other_than_the_signed_one_is_refused(fed: Federation) -> None:
    through_masking(fed)
    sigs = tuple(ask(fed, i, SecAggConsistency(tuple(IDS))) for i in IDS)
    with pytest.raises(SecAggRefused, match="differs from the one this node signed"):
        ask(fed, "inst-000", SecAggUnmask(tuple(IDS[:5]), sigs))  # type: ignore[arg-type]


def test_survivor_sets_below_n_min_are_not_signed(fed: Federation) -> None:
    through_masking(fed)
    with pytest.raises(SecAggRefused, match="fewer than the 3 the plan's privacy guarantee"):
        ask(fed, "inst-000", SecAggConsistency(("inst-000", "inst-001")))


def test_input_is_not_given_when_fewer_than_n_min_hold_shares(fed: Federation) -> None:
    # n_min 5, but the coordinator goes on to masking with only four share holders: the round
    # could never release, so the node neither masks its input nor charges its ledger for it.
    keys = {i: ask(fed, i, setup_msg(n_min=5)) for i in IDS}
    shares = {
        i: ask(fed, i, SecAggShareKeys(tuple(keys[j] for j in IDS if j != i)))  # type: ignore[misc]
        for i in IDS
    }
    four = tuple(IDS[:4])
    inbox = tuple(
        e
        for sender, s in shares.items()
        if sender in four
        for e in s.shares  # type: ignore[attr-defined]
        if e.recipient == "inst-000"
    )
    with pytest.raises(SecAggRefused, match=r"only 4 institutions hold shares.*fewer than the 5"):
        ask(fed, "inst-000", SecAggMaskedInput(four, inbox))
    assert "inst-000" not in fed.contributed


# --- replays and order ------------------------------------------------------------------------


def test_identical_resend_gets_the_same_answer_but_changed_replay_is_refused(
    fed: Federation,
) -> None:
    keys, shares = through_masking(fed)
    again = ask(fed, "inst-000", SecAggShareKeys(tuple(keys[j] for j in IDS[1:])))
    assert again == shares["inst-000"]  # a retry: byte-identical, nothing new revealed
    with pytest.raises(SecAggRefused, match="refusing a replayed stage"):
        ask(fed, "inst-000", SecAggShareKeys(tuple(keys[j] for j in IDS[1:4])))
    ask(fed, "inst-000", SecAggConsistency(tuple(IDS)))
    with pytest.raises(SecAggRefused, match="refusing a replayed stage"):
        ask(fed, "inst-000", SecAggConsistency(tuple(IDS[:5])))


def test_stages_out_of_order_and_unknown_rounds_are_refused(fed: Federation) -> None:
    ask(fed, "inst-000", setup_msg())
    with pytest.raises(SecAggRefused, match="expects the share keys stage next, not masked"):
        ask(fed, "inst-000", SecAggMaskedInput(tuple(IDS), ()))
    with pytest.raises(SecAggRefused, match="unknown here"):
        fed.clients["inst-001"].handle(SecAggRequest("other-round", SecAggConsistency(tuple(IDS))))
    with pytest.raises(SecAggRefused, match="already answered"):
        ask(fed, "inst-000", setup_msg(n_min=4))  # the same round, other parameters


def test_shares_misaddressed_or_missing_are_refused(fed: Federation) -> None:
    keys = advertise(fed)
    shares = share(fed, keys)
    inbox = tuple(e for s in shares.values() for e in s.shares if e.recipient == "inst-000")
    other = next(e for e in shares["inst-002"].shares if e.recipient == "inst-001")
    with pytest.raises(SecAggRefused, match="addressed to inst-001"):
        ask(fed, "inst-000", SecAggMaskedInput(tuple(IDS), (*inbox, other)))
    missing = tuple(e for e in inbox if e.sender != "inst-003")
    client = fed.clients["inst-000"]
    with pytest.raises(SecAggRefused, match="relayed no share from them"):
        client.handle(SecAggRequest(RID, SecAggMaskedInput(tuple(IDS), missing)))
    # Nothing was contributed (or charged) by the refusing node.
    assert "inst-000" not in fed.contributed


def test_a_refusal_reaches_the_coordinator_as_a_reason(fed: Federation) -> None:
    # Through the node's task handling: the refusal is a SECAGG_REFUSED error with the text.
    from protocols.errors import ErrorCode
    from protocols.messages import ErrorInfo, Task

    handler = fed.handler("inst-000")
    task = Task("run/secure", "run", "s", 1000, SecAggRequest(RID, SecAggConsistency(tuple(IDS))))
    result = handler(task)
    assert isinstance(result.outcome, ErrorInfo)
    assert result.outcome.code is ErrorCode.SECAGG_REFUSED
    assert "unknown here" in result.outcome.message
    assert np.all(fed.vectors["inst-000"] == fed.vectors["inst-000"])  # untouched


def test_finished_rounds_do_not_block_new_ones_but_open_ones_are_limited(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    import node.secure as secure

    monkeypatch.setattr(secure, "MAX_OPEN_ROUNDS", 3)
    client = fed.clients["inst-000"]
    for i in range(3):
        client.handle(SecAggRequest(f"open-{i}", setup_msg()))
    with pytest.raises(SecAggRefused, match="too many secure rounds open at once"):
        client.handle(SecAggRequest("open-3", setup_msg()))
    for state in client._rounds.values():  # as if each had run to its end
        state.done = len(STAGE_ORDER) - 1
    for i in range(3, 6):
        client.handle(SecAggRequest(f"open-{i}", setup_msg()))  # finished ones make room
