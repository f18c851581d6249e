#![deny(deprecated)]

pub mod customer {
    use outbox::AggregateRoot;
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, AggregateRoot)]
    #[sea_orm(table_name = "customers")]
    #[aggregate_root(aggregate = "Customer")]
    pub struct Model {
        #[sea_orm(primary_key)]
        #[aggregate_root(id)]
        pub id: i32,
        pub name: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use sea_orm::{DatabaseTransaction, DbErr, EntityTrait};

async fn rename_all(txn: &DatabaseTransaction) -> Result<(), DbErr> {
    customer::Entity::update_many().exec(txn).await?;
    // The explicit way past the warning, for a user who writes the snapshots themself.
    <customer::Entity as EntityTrait>::delete_many().exec(txn).await?;
    Ok(())
}

fn main() {
    let _ = rename_all;
}
