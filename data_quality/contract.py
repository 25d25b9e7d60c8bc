"""The source data contract (``../shared/data-contract.md``) as code.

One place says which entities exist, which are required, and which columns each has. The
ingest assets, the sample-data generator and the tests all read it from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Entity:
    name: str
    key: str
    required: bool
    required_columns: tuple[str, ...]
    optional_columns: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return self.required_columns + self.optional_columns


CUSTOMERS = Entity(
    name="customers",
    key="customer_id",
    required=True,
    required_columns=("customer_id", "created_at"),
    optional_columns=(
        "updated_at",
        "email",
        "phone",
        "full_name",
        "country",
        "region",
        "city",
        "postal_code",
        "birth_date",
        "gender",
        "acquisition_channel",
        "company_name",
        "company_size",
        "industry",
        "marketing_consent",
        "preferred_channel",
    ),
)

ORDERS = Entity(
    name="orders",
    key="order_id",
    required=True,
    required_columns=("order_id", "customer_id", "ordered_at", "amount"),
    optional_columns=("status", "currency", "product_category", "quantity", "sales_channel"),
)

INTERACTIONS = Entity(
    name="interactions",
    key="interaction_id",
    required=False,
    required_columns=("interaction_id", "customer_id", "occurred_at", "channel", "interaction_type"),
    optional_columns=("campaign_id", "resolved", "satisfaction_score", "nps_score", "sentiment"),
)

CAMPAIGNS = Entity(
    name="campaigns",
    key="campaign_id",
    required=False,
    required_columns=("campaign_id",),
    optional_columns=("name", "channel", "started_at", "ended_at", "cost"),
)

ENTITIES: dict[str, Entity] = {e.name: e for e in (CUSTOMERS, ORDERS, INTERACTIONS, CAMPAIGNS)}

ORDER_STATUSES = ("completed", "cancelled", "refunded")
