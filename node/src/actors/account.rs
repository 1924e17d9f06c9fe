//! The seed's `account` actor: open, deposit, withdraw (never below zero).

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::actor::{Decision, EventSourced, Rejected};

/// The `account` actor type.
pub struct AccountActor;

/// State of an account: `{balance, open}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountState {
    pub balance: f64,
    pub open: bool,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub enum AccountCommand {
    Open,
    Deposit {
        amount: f64,
    },
    Withdraw {
        amount: f64,
    },
    /// Answers `{balance, open}` and records nothing (a read through the
    /// actor: one turn, no write).
    Balance,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccountEvent {
    AccountOpened {},
    MoneyDeposited { amount: f64 },
    MoneyWithdrawn { amount: f64 },
}

impl EventSourced for AccountActor {
    type State = AccountState;
    type Command = AccountCommand;
    type Event = AccountEvent;

    fn name(&self) -> &'static str {
        "account"
    }

    fn handle(
        &self,
        id: &str,
        state: &AccountState,
        command: AccountCommand,
    ) -> Result<Decision<AccountEvent>, Rejected> {
        let event = match command {
            AccountCommand::Balance => {
                return Ok(Decision::emit(
                    Vec::new(),
                    json!({ "balance": state.balance, "open": state.open }),
                ));
            }
            AccountCommand::Open if state.open => {
                return Err(Rejected(format!("account `{id}` is already open")));
            }
            AccountCommand::Open => AccountEvent::AccountOpened {},
            _ if !state.open => {
                return Err(Rejected(format!(
                    "account `{id}` is not open; send OPEN first"
                )));
            }
            AccountCommand::Deposit { amount } => AccountEvent::MoneyDeposited {
                amount: positive(amount)?,
            },
            AccountCommand::Withdraw { amount } => {
                let amount = positive(amount)?;
                if amount > state.balance {
                    return Err(Rejected(format!(
                        "insufficient funds: cannot withdraw {amount} from account `{id}` with balance {}",
                        state.balance
                    )));
                }
                AccountEvent::MoneyWithdrawn { amount }
            }
        };
        let mut next = state.clone();
        self.apply(&mut next, event.clone());
        Ok(Decision::emit(
            vec![event],
            json!({ "balance": next.balance, "open": next.open }),
        ))
    }

    fn apply(&self, state: &mut AccountState, event: AccountEvent) {
        match event {
            AccountEvent::AccountOpened {} => state.open = true,
            AccountEvent::MoneyDeposited { amount } => state.balance += amount,
            AccountEvent::MoneyWithdrawn { amount } => state.balance -= amount,
        }
    }
}

fn positive(amount: f64) -> Result<f64, Rejected> {
    if amount.is_finite() && amount > 0.0 {
        Ok(amount)
    } else {
        Err(Rejected(format!(
            "amount must be a positive number, got {amount}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withdrawing_more_than_the_balance_is_refused() {
        let a = AccountActor;
        let mut s = AccountState::default();
        for c in [
            AccountCommand::Open,
            AccountCommand::Deposit { amount: 10.0 },
        ] {
            for e in a.handle("x", &s, c).unwrap().events {
                a.apply(&mut s, e);
            }
        }
        let err = a
            .handle("x", &s, AccountCommand::Withdraw { amount: 11.0 })
            .err()
            .unwrap();
        assert!(err.0.contains("insufficient funds"), "{err}");
        assert_eq!(
            a.handle("x", &s, AccountCommand::Withdraw { amount: 10.0 })
                .unwrap()
                .reply["balance"],
            0.0
        );
    }
}
