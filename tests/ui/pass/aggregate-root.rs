#![deny(warnings, unused_qualifications)]

pub mod order {
    use outbox::AggregateRoot;
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, AggregateRoot)]
    #[sea_orm(table_name = "orders")]
    #[aggregate_root(aggregate = "Order", children(lines = super::order_line::Entity))]
    pub struct Model {
        #[sea_orm(primary_key)]
        #[aggregate_root(id)]
        pub id: i32,
        pub customer: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(has_many = "super::order_line::Entity")]
        Lines,
    }

    impl Related<super::order_line::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Lines.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod order_line {
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "order_lines")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub order_id: i32,
        pub sku: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(belongs_to = "super::order::Entity", from = "Column::OrderId", to = "super::order::Column::Id")]
        Order,
    }

    impl Related<super::order::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Order.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

use outbox::{AggregateRoot, Change};
use sea_orm::DatabaseTransaction;

/// What an `ActiveModelBehavior::after_save` hook calls.
async fn on_save(txn: &DatabaseTransaction, root: &order::Model) -> Result<(), sea_orm::DbErr> {
    outbox::write_snapshot(txn, root, Change::saved(true)).await
}

fn main() {
    let root = order::Model { id: 3, customer: "ada".into() };
    assert_eq!(root.aggregate_type(), "Order");
    assert_eq!(root.aggregate_id(), "3");
    let _ = on_save;
}
