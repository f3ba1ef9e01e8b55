//! The Patient resources the console writes into the built-in store (an admin's display label,
//! `Patient.name[0].text`): the hubs send no demographics, so these are the clinic's own, kept in
//! a table of their own beside the hubs' resources (`console_patients`, created on first use) and
//! merged into the built-in store's Patient reads and searches by the console's FHIR client.

use super::{ReceiverDb, SearchError};
use rusqlite::{params, OptionalExtension};
use serde_json::Value;
use std::collections::HashMap;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS console_patients(
    id TEXT PRIMARY KEY NOT NULL,
    json TEXT NOT NULL
)";

impl ReceiverDb {
    /// `PUT Patient/<id>`: store (or replace) the clinic's Patient resource.
    pub fn put_patient(&mut self, patient: &Value) -> Result<(), SearchError> {
        let id = patient
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| crate::clinic::registry::valid_id(id))
            .ok_or_else(|| SearchError::Value {
                param: "id".into(),
                value: String::new(),
                why: "a Patient to store needs a valid id".into(),
            })?;
        if patient.get("resourceType").and_then(Value::as_str) != Some("Patient") {
            return Err(SearchError::Type("(not a Patient)".into()));
        }
        self.conn.execute(SCHEMA, [])?;
        self.conn.execute(
            "INSERT INTO console_patients(id, json) VALUES (?1, ?2)
             ON CONFLICT(id) DO UPDATE SET json = excluded.json",
            params![id, patient.to_string()],
        )?;
        Ok(())
    }

    /// The stored Patient resource of `id`, if the console wrote one.
    pub fn stored_patient(&self, id: &str) -> Result<Option<Value>, SearchError> {
        self.conn.execute(SCHEMA, [])?;
        let s: Option<String> = self
            .conn
            .query_row(
                "SELECT json FROM console_patients WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(s.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Every stored Patient resource, by id.
    pub fn stored_patients(&self) -> Result<HashMap<String, Value>, SearchError> {
        self.conn.execute(SCHEMA, [])?;
        let mut st = self
            .conn
            .prepare_cached("SELECT id, json FROM console_patients")?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, j)| Some((id, serde_json::from_str(&j).ok()?)))
            .collect())
    }
}
