"""Writes fedge/data/intent.csv: the small customer-service intent dataset fedge ships.

Hand-written phrasings per intent, expanded with slot fillers under a fixed seed so the file is reproducible.
Run: python tools/make_intent_dataset.py
"""

import csv
import random
from pathlib import Path

SLOTS = {
    "{acct}": [
        "checking account",
        "savings account",
        "current account",
        "joint account",
        "business account",
        "account",
    ],
    "{card}": ["debit card", "credit card", "visa card", "bank card", "card", "mastercard"],
    "{amt}": ["50 dollars", "$200", "1,000 euros", "300 pounds", "twenty bucks", "$75.50", "500"],
    "{who}": ["my sister", "my landlord", "John", "my savings", "another bank", "a friend", "my mom"],
    "{when}": ["yesterday", "last week", "this morning", "on Monday", "two days ago", "last month"],
    "{place}": ["Spain", "Japan", "the US", "Mexico", "France", "Canada", "Thailand"],
    "{phone}": ["iPhone", "Pixel", "Galaxy", "phone", "handset", "mobile"],
    "{area}": ["downtown", "my area", "the north side", "my street", "the whole city", "my neighborhood"],
}

INTENTS = {
    "check_balance": [
        "what is my {acct} balance",
        "how much money do I have in my {acct}",
        "show me the balance of my {acct}",
        "can you tell me my current balance",
        "balance inquiry for my {acct} please",
        "how much is left in my {acct}",
        "I want to check my balance",
        "what's the available balance",
        "how much do I have right now",
        "tell me how much cash is in my {acct}",
        "check funds in {acct}",
        "is there enough money in my {acct}",
        "need to see my balance before I pay rent",
        "remaining balance on my {acct}?",
        "how much can I spend today",
    ],
    "lost_card": [
        "I lost my {card}",
        "my {card} was stolen {when}",
        "please block my {card}",
        "freeze my {card} right now",
        "someone took my wallet with my {card}",
        "I can't find my {card} anywhere",
        "report a stolen {card}",
        "my {card} is missing, cancel it",
        "I think I left my {card} at a restaurant {when}",
        "lock my {card} please",
        "my purse was stolen with all my cards",
        "need a replacement for my lost {card}",
        "help, my {card} is gone",
        "deactivate my {card} it was stolen",
        "card missing since {when}, what do I do",
    ],
    "transfer_money": [
        "send {amt} to {who}",
        "transfer {amt} from my {acct} to {who}",
        "I want to wire money to {who}",
        "move {amt} into my {acct}",
        "how do I make a transfer to {who}",
        "pay {who} {amt}",
        "set up a bank transfer of {amt}",
        "can I send money abroad to {who}",
        "make a payment of {amt} to {who}",
        "transfer funds between my accounts",
        "wire {amt} to {who} today",
        "I need to send {who} some money",
        "schedule a transfer of {amt} every month",
        "international transfer to {place}",
        "move money to {who}",
    ],
    "dispute_charge": [
        "there is a charge I don't recognize",
        "I was charged twice for the same purchase",
        "dispute a transaction from {when}",
        "unknown payment of {amt} on my {card}",
        "I want to report a fraudulent charge",
        "refund a wrong charge",
        "why was I billed {amt} {when}",
        "a merchant charged me {amt} I never authorized",
        "this transaction is not mine",
        "I need to contest a charge on my statement",
        "there's a suspicious charge on my {card}",
        "the store overcharged me {amt}",
        "I never made this purchase",
        "chargeback for {amt} please",
        "double charge on my {card} {when}",
    ],
    "change_pin": [
        "I want to change my PIN",
        "how do I reset my {card} PIN",
        "forgot my PIN number",
        "update the PIN on my {card}",
        "set a new PIN for my {card}",
        "my PIN is blocked after three tries",
        "can I choose a different PIN",
        "reset pin",
        "I need a new pin code",
        "change the security code for my {card}",
        "unlock my PIN",
        "I entered the wrong PIN too many times",
        "how can I change my card pin online",
        "new PIN please",
        "remind me how to change my PIN",
    ],
    "loan_inquiry": [
        "what are your loan interest rates",
        "I want to apply for a personal loan",
        "can I get a mortgage",
        "how much can I borrow",
        "loan options for buying a car",
        "what's the APR on a {amt} loan",
        "am I eligible for a home loan",
        "apply for credit of {amt}",
        "tell me about student loans",
        "how long does loan approval take",
        "I need to borrow {amt}",
        "refinance my mortgage",
        "what documents do I need for a loan",
        "monthly payment on a {amt} loan",
        "small business loan information",
    ],
    "pay_bill": [
        "I want to pay my bill",
        "how do I pay my phone bill",
        "pay my monthly bill of {amt}",
        "my bill is due, can I pay now",
        "set up autopay for my bill",
        "pay the invoice from {when}",
        "where can I pay my statement",
        "I'd like to settle my outstanding balance",
        "payment options for my bill",
        "make a bill payment",
        "when is my bill due",
        "pay {amt} towards my bill",
        "my last bill was {amt}, how do I pay it",
        "can I pay my bill with my {card}",
        "late payment on my bill",
    ],
    "data_usage": [
        "how much data have I used",
        "check my data usage",
        "how many gigabytes are left this month",
        "I'm running out of data",
        "data balance on my {phone}",
        "show my mobile data consumption",
        "why is my data running out so fast",
        "add more data to my plan",
        "what's my remaining data allowance",
        "buy an extra data pack",
        "how much internet do I have left",
        "my data usage seems too high",
        "data left on my plan",
        "top up my data",
        "am I close to my data limit",
    ],
    "roaming": [
        "will my phone work in {place}",
        "activate roaming for my trip to {place}",
        "how much is roaming in {place}",
        "international roaming charges",
        "I'm traveling to {place} next week",
        "turn on roaming on my {phone}",
        "can I use my data abroad",
        "roaming packages for {place}",
        "my phone has no signal in {place}",
        "do you have a travel pass for {place}",
        "calls from {place} cost",
        "disable roaming so I don't get charged",
        "using my {phone} overseas",
        "travel plan for {place}",
        "is roaming included in my plan",
    ],
    "network_outage": [
        "there is no signal in {area}",
        "the network is down in {area}",
        "my internet is not working",
        "no service on my {phone} since {when}",
        "calls keep dropping",
        "is there an outage in {area}",
        "mobile data stopped working",
        "I can't make calls",
        "the connection is very slow in {area}",
        "4G is not working in {area}",
        "my home internet went down {when}",
        "no bars on my {phone}",
        "the wifi router lost connection",
        "network problem in {area}",
        "why is there no coverage in {area}",
    ],
    "upgrade_device": [
        "I want to upgrade my {phone}",
        "am I eligible for a new {phone}",
        "what phones can I get with an upgrade",
        "trade in my old {phone}",
        "get the latest {phone}",
        "when can I upgrade my device",
        "how much is the new {phone}",
        "I'd like a newer phone",
        "upgrade offers for my plan",
        "swap my {phone} for a new model",
        "buy a new {phone} on installments",
        "device upgrade options",
        "my {phone} is old, can I get a new one",
        "early upgrade fee",
        "new phone deals",
    ],
    "cancel_service": [
        "I want to cancel my subscription",
        "cancel my contract",
        "how do I terminate my plan",
        "end my service",
        "stop my monthly plan",
        "close my mobile line",
        "I'm switching to another provider",
        "disconnect my line",
        "cancel my internet service",
        "terminate my account with you",
        "what is the cancellation fee",
        "I no longer want this service",
        "unsubscribe me from the plan",
        "cancel service effective {when}",
        "please close my phone account",
    ],
}


def expand(template: str, rng: random.Random) -> str:
    out = template
    for slot, values in SLOTS.items():
        while slot in out:
            out = out.replace(slot, rng.choice(values), 1)
    if rng.random() < 0.3:
        out = rng.choice(["hi, ", "hello ", "please ", "hey, ", "excuse me, "]) + out
    if rng.random() < 0.3:
        out += rng.choice([" thanks", " please", "?", " asap", ", thank you"])
    return out


def main(per_intent: int = 45, seed: int = 7) -> None:
    rng = random.Random(seed)
    rows = []
    for label, templates in INTENTS.items():
        seen: set[str] = set()
        attempts = 0
        while len(seen) < per_intent and attempts < per_intent * 20:
            attempts += 1
            seen.add(expand(rng.choice(templates), rng))
        rows += [(text, label) for text in sorted(seen)]
    rng.shuffle(rows)
    path = Path(__file__).resolve().parent.parent / "fedge" / "data" / "intent.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    print(f"wrote {len(rows)} rows, {len(INTENTS)} intents -> {path}")


if __name__ == "__main__":
    main()
