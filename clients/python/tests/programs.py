"""Real DSPy programs with state set by hand (no LLM is called)."""

from __future__ import annotations

import dspy


class QA(dspy.Module):
    """A multi-predictor module: rewrite the question, then answer it with reasoning."""

    def __init__(self) -> None:
        super().__init__()
        self.rewrite = dspy.Predict("question -> query")
        self.answer = dspy.ChainOfThought("context, question -> answer")

    def forward(self, question: str, context: str = "") -> dspy.Prediction:
        query = self.rewrite(question=question).query
        return self.answer(context=context or query, question=question)


def predict() -> dspy.Predict:
    p = dspy.Predict("question -> answer")
    p.signature = p.signature.with_instructions("Answer in one word. Café: naïve “quotes” \\ / \n ok")
    p.demos = [dspy.Example(question="2+2?", answer="4"), dspy.Example(question="Capital of France?", answer="Paris")]
    return p


def chain_of_thought() -> dspy.ChainOfThought:
    c = dspy.ChainOfThought("question -> answer")
    c.predict.signature = c.predict.signature.with_instructions("Think step by step, then answer.")
    c.predict.demos = [
        dspy.Example(question="Is 7 prime?", reasoning="7 has no divisor but 1 and 7.", answer="yes")
    ]
    return c


def qa_module() -> QA:
    m = QA()
    m.rewrite.signature = m.rewrite.signature.with_instructions("Rewrite as a search query.")
    m.rewrite.demos = [dspy.Example(question="who wrote hamlet", query="Hamlet author")]
    m.answer.predict.signature = m.answer.predict.signature.with_instructions("Use the context.")
    m.answer.predict.demos = [
        dspy.Example(context="Hamlet is by Shakespeare.", question="Who wrote Hamlet?",
                     reasoning="The context says so.", answer="Shakespeare"),
        dspy.Example(context="", question="1e3?", reasoning="1e3 = 1000", answer="1000"),
    ]
    return m


def fresh(kind: str):
    return {"predict": lambda: dspy.Predict("question -> answer"),
            "chain_of_thought": lambda: dspy.ChainOfThought("question -> answer"),
            "qa_module": QA}[kind]()


BUILDERS = {"predict": predict, "chain_of_thought": chain_of_thought, "qa_module": qa_module}
