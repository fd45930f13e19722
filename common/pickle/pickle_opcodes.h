// Pickle opcode bytes, protocols 0 to 5, as CPython's Lib/pickle.py names
// them (kMark is pickle.MARK, kBinUnicode8 is pickle.BINUNICODE8, ...).
// Lib/pickletools.py documents each one's argument and stack effect.
#ifndef PERSISTD_COMMON_PICKLE_PICKLE_OPCODES_H_
#define PERSISTD_COMMON_PICKLE_PICKLE_OPCODES_H_

#include <cstdint>

namespace persistd {
namespace pickle_op {

// Protocol 0 and 1.
inline constexpr uint8_t kMark = '(';            // push a mark
inline constexpr uint8_t kStop = '.';            // end of the pickle
inline constexpr uint8_t kPop = '0';             // discard the top item
inline constexpr uint8_t kPopMark = '1';         // discard up to the mark
inline constexpr uint8_t kDup = '2';             // duplicate the top item
inline constexpr uint8_t kFloat = 'F';           // float, decimal text
inline constexpr uint8_t kInt = 'I';             // int, decimal text
inline constexpr uint8_t kBinInt = 'J';          // int, 4-byte signed
inline constexpr uint8_t kBinInt1 = 'K';         // int, 1-byte unsigned
inline constexpr uint8_t kLong = 'L';            // int, decimal text + 'L'
inline constexpr uint8_t kBinInt2 = 'M';         // int, 2-byte unsigned
inline constexpr uint8_t kNone = 'N';            // None
inline constexpr uint8_t kPersId = 'P';          // persistent id, text
inline constexpr uint8_t kBinPersId = 'Q';       // persistent id from stack
inline constexpr uint8_t kReduce = 'R';          // callable(*args)
inline constexpr uint8_t kString = 'S';          // quoted, escaped str
inline constexpr uint8_t kBinString = 'T';       // 4-byte length + bytes
inline constexpr uint8_t kShortBinString = 'U';  // 1-byte length + bytes
inline constexpr uint8_t kUnicode = 'V';         // raw-unicode-escape text
inline constexpr uint8_t kBinUnicode = 'X';      // 4-byte length + utf-8
inline constexpr uint8_t kAppend = 'a';          // list.append(top)
inline constexpr uint8_t kBuild = 'b';           // __setstate__ / dict update
inline constexpr uint8_t kGlobal = 'c';          // "module\nname\n"
inline constexpr uint8_t kDict = 'd';            // dict from mark
inline constexpr uint8_t kEmptyDict = '}';       // {}
inline constexpr uint8_t kAppends = 'e';         // list.extend(mark slice)
inline constexpr uint8_t kGet = 'g';             // memo get, decimal text
inline constexpr uint8_t kBinGet = 'h';          // memo get, 1-byte index
inline constexpr uint8_t kInst = 'i';            // class from text, mark args
inline constexpr uint8_t kLongBinGet = 'j';      // memo get, 4-byte index
inline constexpr uint8_t kList = 'l';            // list from mark
inline constexpr uint8_t kEmptyList = ']';       // []
inline constexpr uint8_t kObj = 'o';             // class and args from mark
inline constexpr uint8_t kPut = 'p';             // memo put, decimal text
inline constexpr uint8_t kBinPut = 'q';          // memo put, 1-byte index
inline constexpr uint8_t kLongBinPut = 'r';      // memo put, 4-byte index
inline constexpr uint8_t kSetItem = 's';         // dict[k] = v
inline constexpr uint8_t kTuple = 't';           // tuple from mark
inline constexpr uint8_t kEmptyTuple = ')';      // ()
inline constexpr uint8_t kSetItems = 'u';        // dict.update(mark slice)
inline constexpr uint8_t kBinFloat = 'G';        // float, 8-byte big-endian

// Protocol 2.
inline constexpr uint8_t kProto = 0x80;          // protocol version
inline constexpr uint8_t kNewObj = 0x81;         // cls.__new__(cls, *args)
inline constexpr uint8_t kExt1 = 0x82;           // extension registry code
inline constexpr uint8_t kExt2 = 0x83;
inline constexpr uint8_t kExt4 = 0x84;
inline constexpr uint8_t kTuple1 = 0x85;         // tuple of the top 1..3
inline constexpr uint8_t kTuple2 = 0x86;
inline constexpr uint8_t kTuple3 = 0x87;
inline constexpr uint8_t kNewTrue = 0x88;
inline constexpr uint8_t kNewFalse = 0x89;
inline constexpr uint8_t kLong1 = 0x8a;          // 1-byte length, LE two's c.
inline constexpr uint8_t kLong4 = 0x8b;          // 4-byte length, LE two's c.

// Protocol 3.
inline constexpr uint8_t kBinBytes = 'B';        // 4-byte length + bytes
inline constexpr uint8_t kShortBinBytes = 'C';   // 1-byte length + bytes

// Protocol 4.
inline constexpr uint8_t kShortBinUnicode = 0x8c;  // 1-byte length + utf-8
inline constexpr uint8_t kBinUnicode8 = 0x8d;      // 8-byte length + utf-8
inline constexpr uint8_t kBinBytes8 = 0x8e;        // 8-byte length + bytes
inline constexpr uint8_t kEmptySet = 0x8f;
inline constexpr uint8_t kAddItems = 0x90;         // set.update(mark slice)
inline constexpr uint8_t kFrozenSet = 0x91;        // frozenset from mark
inline constexpr uint8_t kNewObjEx = 0x92;         // cls.__new__(*args, **kw)
inline constexpr uint8_t kStackGlobal = 0x93;      // module, name from stack
inline constexpr uint8_t kMemoize = 0x94;          // memo[len(memo)] = top
inline constexpr uint8_t kFrame = 0x95;            // 8-byte frame length

// Protocol 5.
inline constexpr uint8_t kByteArray8 = 0x96;       // 8-byte length + bytes
inline constexpr uint8_t kNextBuffer = 0x97;       // out-of-band buffer
inline constexpr uint8_t kReadOnlyBuffer = 0x98;   // make top read-only

inline constexpr int kHighestProtocol = 5;

}  // namespace pickle_op
}  // namespace persistd

#endif  // PERSISTD_COMMON_PICKLE_PICKLE_OPCODES_H_
