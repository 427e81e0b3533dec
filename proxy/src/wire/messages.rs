//! (to be written) the messages part of the contract.
