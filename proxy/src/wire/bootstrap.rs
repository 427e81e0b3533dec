//! (to be written) the bootstrap part of the contract.
