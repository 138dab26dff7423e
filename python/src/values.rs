//! Python values ↔ the crate's `Value`: `None`, `bool` and `int` (64-bit, range checked),
//! `float`, `str`, `bytes` (and `bytearray`); anything else is a `TypeError` naming the column.

use pyo3::exceptions::{PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyFloat, PyInt, PyMapping, PyString};
use syncjournal::Value;

/// Converts one Python value stored in `column` of `table`.
pub(crate) fn to_value(obj: &Bound<'_, PyAny>, table: &str, column: &str) -> PyResult<Value> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if obj.is_instance_of::<PyBool>() {
        return Ok(Value::Integer(i64::from(obj.is_truthy()?)));
    }
    if obj.is_instance_of::<PyInt>() {
        return obj.extract::<i64>().map(Value::Integer).map_err(|_| {
            PyOverflowError::new_err(format!(
                "column {column:?} of table {table:?}: {} does not fit in a 64-bit signed integer (SQLite's INTEGER)",
                obj.repr().map_or_else(|_| "the integer".to_string(), |r| r.to_string())
            ))
        });
    }
    if obj.is_instance_of::<PyFloat>() {
        return Ok(Value::Real(obj.extract::<f64>()?));
    }
    if obj.is_instance_of::<PyString>() {
        return Ok(Value::Text(obj.extract::<String>()?));
    }
    if obj.is_instance_of::<PyBytes>() || obj.is_instance_of::<PyByteArray>() {
        return Ok(Value::Blob(obj.extract::<Vec<u8>>()?));
    }
    let ty = obj
        .get_type()
        .fully_qualified_name()
        .map_or_else(|_| "?".to_string(), |n| n.to_string());
    Err(PyTypeError::new_err(format!(
        "column {column:?} of table {table:?}: a value of type {ty} cannot be stored; syncjournal stores None, int, float, str and bytes (convert it first, e.g. a datetime to an ISO string)"
    )))
}

/// Converts a crate value back to Python.
pub(crate) fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Integer(i) => i.into_pyobject(py)?.into_any(),
        Value::Real(r) => r.into_pyobject(py)?.into_any(),
        Value::Text(t) => PyString::new(py, t).into_any(),
        Value::Blob(b) => PyBytes::new(py, b).into_any(),
    })
}

/// Converts a mapping of column names to values (`key` or `values` of a mutation).
pub(crate) fn to_columns(
    obj: &Bound<'_, PyAny>,
    table: &str,
    what: &str,
) -> PyResult<Vec<(String, Value)>> {
    let mapping = obj.cast::<PyMapping>().map_err(|_| {
        PyTypeError::new_err(format!(
            "table {table:?}: {what} must be a dict of column names to values, not {}",
            obj.get_type()
                .fully_qualified_name()
                .map_or_else(|_| "?".to_string(), |n| n.to_string())
        ))
    })?;
    let mut out = Vec::new();
    for item in mapping.items()?.iter() {
        let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
        let name: String = k.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "table {table:?}: {what} has a column name that is not a str ({})",
                k.repr().map_or_else(|_| "?".to_string(), |r| r.to_string())
            ))
        })?;
        let value = to_value(&v, table, &name)?;
        out.push((name, value));
    }
    Ok(out)
}
