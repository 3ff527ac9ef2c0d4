//! A small set of channels, stored as a bitmask.

use tacto_model::Channel;

/// A set of [`Channel`]s.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ChannelSet(u8);

impl ChannelSet {
    /// No channel.
    pub const EMPTY: ChannelSet = ChannelSet(0);
    /// Every channel.
    pub const ALL: ChannelSet = ChannelSet(0b111);

    fn bit(c: Channel) -> u8 {
        match c {
            Channel::Sms => 1,
            Channel::Email => 2,
            Channel::Voice => 4,
        }
    }

    /// The set of the listed channels.
    pub fn from_slice(cs: &[Channel]) -> Self {
        cs.iter().fold(Self::EMPTY, |s, &c| s.with(c))
    }

    /// This set plus `c`.
    pub fn with(self, c: Channel) -> Self {
        Self(self.0 | Self::bit(c))
    }

    /// Whether `c` is in the set.
    pub fn contains(self, c: Channel) -> bool {
        self.0 & Self::bit(c) != 0
    }

    /// Whether the set holds every channel.
    pub fn is_all(self) -> bool {
        self.0 & Self::ALL.0 == Self::ALL.0
    }
}
