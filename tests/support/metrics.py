"""Read a gateway's ``/metrics`` the way Prometheus does."""

from __future__ import annotations

import re

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def sample(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    return (await scrape(client)).get((name, tuple(sorted(labels.items()))), 0.0)


def exported_names(text: str) -> set[str]:
    """Every series name an exposition ``text`` offers a query: each family's, its samples',
    ``_total`` of counters and ``_bucket``/``_sum``/``_count`` of histograms (so a family
    with no samples yet, such as canaries while they are off, still counts)."""
    exported = set()
    for family in text_string_to_metric_families(text):
        exported.add(family.name)
        exported.update(sample.name for sample in family.samples)
        if family.type == "counter":
            exported.add(f"{family.name}_total")
        if family.type == "histogram":
            exported.update(f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return exported


def herald_names(expression: str) -> set[str]:
    """The Herald metric names a PromQL expression reads."""
    return set(re.findall(r"\bherald_[a-z_]+\b", expression))
