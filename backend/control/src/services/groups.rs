//! Local groups (roles bound to groups, members) and user attributes
//! (`docs/decisions/0012-groups-and-conditions.md`). Every change recompiles the tenant's bundle.

use std::collections::HashMap;

use gatehouse_core::GatehouseError;
use gatehouse_core::groups::{GroupView, UserAttribute, validate_attributes};
use gatehouse_core::ids::validate_slug;
use gatehouse_store::{Tenant, UserGroup};

use super::{Actor, Need, Result, Services, new_id, store_err};
use crate::now_ms;

impl Services {
    async fn group_by_slug(&self, t: &Tenant, slug: &str) -> Result<UserGroup> {
        self.store
            .group_by_slug(&t.id, slug)
            .await
            .map_err(store_err("group"))?
            .ok_or_else(|| GatehouseError::not_found(format!("group '{slug}'")))
    }

    /// Creates a local group. The slug is what conditions see in `user.groups`.
    pub async fn create_group(&self, actor: &Actor, tenant: &str, slug: &str, name: &str) -> Result<GroupView> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        validate_slug("slug", slug)?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(GatehouseError::invalid("name", "must be 1 to 100 characters long"));
        }
        let g = UserGroup {
            tenant_id: t.id.clone(),
            id: new_id(),
            slug: slug.to_owned(),
            name: name.to_owned(),
            created_at_ms: now_ms(),
        };
        self.store.create_group(&g).await.map_err(store_err("group"))?;
        Ok(GroupView { slug: g.slug, name: g.name, members: vec![], roles: vec![] })
    }

    /// Deletes a group: its members lose the roles they held through it.
    pub async fn delete_group(&self, actor: &Actor, tenant: &str, slug: &str) -> Result<bool> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        let g = self.group_by_slug(&t, slug).await?;
        self.store.delete_group(&t.id, &g.id).await.map_err(store_err("group"))?;
        self.recompile(&t).await?;
        Ok(true)
    }

    /// A tenant's groups with their members and roles.
    pub async fn list_groups(&self, actor: &Actor, tenant: &str) -> Result<Vec<GroupView>> {
        let t = self.tenant_for(actor, tenant, Need::Read).await?;
        let (groups, members, group_roles, users, roles) = tokio::try_join!(
            self.store.list_groups(&t.id),
            self.store.list_group_members(&t.id),
            self.store.list_group_roles(&t.id),
            self.store.list_users(&t.id),
            self.store.list_roles(&t.id),
        )
        .map_err(store_err("group"))?;
        let email: HashMap<_, _> = users.iter().map(|u| (u.id.as_str(), u.email.as_str())).collect();
        let role: HashMap<_, _> = roles.iter().map(|r| (r.id.as_str(), r.slug.as_str())).collect();
        Ok(groups
            .into_iter()
            .map(|g| {
                let mut members: Vec<String> = members
                    .iter()
                    .filter(|m| m.group_id == g.id)
                    .filter_map(|m| email.get(m.user_id.as_str()).map(|e| (*e).to_owned()))
                    .collect();
                members.sort();
                let mut roles: Vec<String> = group_roles
                    .iter()
                    .filter(|r| r.group_id == g.id)
                    .filter_map(|r| role.get(r.role_id.as_str()).map(|s| (*s).to_owned()))
                    .collect();
                roles.sort();
                GroupView { slug: g.slug, name: g.name, members, roles }
            })
            .collect())
    }

    async fn group_view(&self, actor: &Actor, tenant: &str, slug: &str) -> Result<GroupView> {
        self.list_groups(actor, tenant)
            .await?
            .into_iter()
            .find(|g| g.slug == slug)
            .ok_or_else(|| GatehouseError::not_found(format!("group '{slug}'")))
    }

    /// Puts a user (by e-mail) in a group, or takes them out.
    pub async fn set_group_member(
        &self,
        actor: &Actor,
        tenant: &str,
        group: &str,
        email: &str,
        member: bool,
    ) -> Result<GroupView> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        let g = self.group_by_slug(&t, group).await?;
        let u = self.user_by_email(&t, email).await?;
        if member {
            self.store.add_group_member(&t.id, &g.id, &u.id).await.map_err(store_err("group member"))?;
        } else {
            self.store.remove_group_member(&t.id, &g.id, &u.id).await.map_err(store_err("group member"))?;
        }
        self.recompile(&t).await?;
        self.group_view(actor, tenant, group).await
    }

    /// Binds an access role to a group (every member holds it), or unbinds it.
    pub async fn set_group_role(
        &self,
        actor: &Actor,
        tenant: &str,
        group: &str,
        role: &str,
        bound: bool,
    ) -> Result<GroupView> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        let g = self.group_by_slug(&t, group).await?;
        let r = self.role_by_slug(&t, role).await?;
        if bound {
            self.store.bind_group_role(&t.id, &g.id, &r.id).await.map_err(store_err("group role"))?;
        } else {
            self.store.unbind_group_role(&t.id, &g.id, &r.id).await.map_err(store_err("group role"))?;
        }
        self.recompile(&t).await?;
        self.group_view(actor, tenant, group).await
    }

    /// A user's attributes, by key.
    pub async fn user_attributes(&self, actor: &Actor, tenant: &str, email: &str) -> Result<Vec<UserAttribute>> {
        let t = self.tenant_for(actor, tenant, Need::Read).await?;
        let u = self.user_by_email(&t, email).await?;
        let rows = self.store.list_user_attributes(&t.id).await.map_err(store_err("attribute"))?;
        Ok(rows
            .into_iter()
            .filter(|a| a.user_id == u.id)
            .map(|a| UserAttribute { key: a.attr_key, value: a.attr_value })
            .collect())
    }

    /// Replaces a user's attributes (keys are identifiers; errors name `attributes[i].key`).
    pub async fn set_user_attributes(
        &self,
        actor: &Actor,
        tenant: &str,
        email: &str,
        attributes: &[UserAttribute],
    ) -> Result<Vec<UserAttribute>> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        validate_attributes(attributes)?;
        let u = self.user_by_email(&t, email).await?;
        let pairs: Vec<(String, String)> = attributes.iter().map(|a| (a.key.clone(), a.value.clone())).collect();
        self.store.set_user_attributes(&t.id, &u.id, &pairs).await.map_err(store_err("attribute"))?;
        self.recompile(&t).await?;
        self.user_attributes(actor, tenant, email).await
    }
}
