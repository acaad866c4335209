use dicom_core::{DataElement, VR, dicom_value};
use dicom_dictionary_std::{tags, uids::VERIFICATION};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

// Helper funtion to create a C-ECHO command
fn create_c_echo_command(message_id: u16) -> Vec<u8> {
    let obj = InMemDicomObject::command_from_element_iter([
        // Affected SOP Class UID - Verification SOP Class
        DataElement::new(tags::AFFECTED_SOP_CLASS_UID, VR::UI, VERIFICATION),
        // Command Field - C-ECHO-RQ
        DataElement::new(tags::COMMAND_FIELD, VR::US, dicom_value!(U16, [0x0030])),
        // Message ID
        DataElement::new(tags::MESSAGE_ID, VR::US, dicom_value!(U16, [message_id])),
        // Command Data Set Type - No data set present
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            dicom_value!(U16, [0x0101]),
        ),
    ]);

    let mut data = Vec::new();
    let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
    obj.write_dataset_with_ts(&mut data, &ts)
        .expect("Failed to serialize C-ECHO command");

    data
}
mod successive_pdus_during_client_association {
    use std::net::TcpListener;

    use super::*;
    use crate::{
        ClientAssociationOptions, Pdu,
        pdu::{AbortRQServiceProviderReason, AbortRQSource, PDataValue, PDataValueType},
    };

    use crate::association::server::*;

    #[test]
    fn test_baseline_sync() {
        // Immediately _after_ association, the server sends a C-ECHO command
        // This will be received by the client

        // Setup a mock server that will send multiple PDUs consecutively
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server_addr = listener.local_addr().unwrap();

        // Create a second PDU (C-ECHO command) to send immediately after
        let echo_pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: 1,
                data: create_c_echo_command(1),
                value_type: PDataValueType::Command,
                is_last: true,
            }],
        };
        let server_pdu = echo_pdu.clone();

        // Spawn server thread that sends multiple PDUs back-to-back
        let server_handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();

            // Use ServerAssociationOptions to establish the association
            let server_options = ServerAssociationOptions::new()
                .accept_any()
                .with_abstract_syntax(VERIFICATION)
                .ae_title("THIS-SCP");

            let mut association = server_options.establish(stream).unwrap();

            // Send the second PDU (C-ECHO command) immediately after establishment
            association.send(&server_pdu).unwrap();
            association
        });

        // Give server time to start
        std::thread::sleep(std::time::Duration::from_millis(10));

        // Create client and attempt association
        let scu_options = ClientAssociationOptions::new()
            .with_abstract_syntax(VERIFICATION)
            .calling_ae_title("RANDOM")
            .called_ae_title("THIS-SCP")
            .read_timeout(std::time::Duration::from_secs(5));

        // This should succeed in establishing the association despite multiple PDUs
        let mut association = scu_options.establish(server_addr).unwrap();
        // Client should be able to receive the release request that was sent consecutively
        let received_pdu = association.receive().unwrap();
        assert_eq!(received_pdu, echo_pdu);
        // Clean shutdown
        server_handle.join().unwrap();
        drop(association);
    }

    // Tests edge case where the server sends an extra PDU during association
    // client should be able to handle this gracefully.
    #[test]
    fn test_association_sends_extra_pdu() {
        // During association, the server sends a C-ECHO command
        // This will be received by the client

        // Setup a mock server that will send multiple PDUs consecutively
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server_addr = listener.local_addr().unwrap();

        // Create a second PDU (C-ECHO command) to send immediately after
        let echo_pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: 1,
                data: create_c_echo_command(1),
                value_type: PDataValueType::Command,
                is_last: true,
            }],
        };
        let server_pdu = echo_pdu.clone();

        // Spawn server thread that sends multiple PDUs back-to-back
        let server_handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();

            // Use ServerAssociationOptions to establish the association
            let server_options = ServerAssociationOptions::new()
                .accept_any()
                .with_abstract_syntax(VERIFICATION)
                .ae_title("THIS-SCP");

            let association = server_options
                .establish_with_extra_pdus(stream, vec![server_pdu])
                .unwrap();
            association
        });

        // Give server time to start
        std::thread::sleep(std::time::Duration::from_millis(10));

        // Create client and attempt association
        let scu_options = ClientAssociationOptions::new()
            .with_abstract_syntax(VERIFICATION)
            .calling_ae_title("RANDOM")
            .called_ae_title("THIS-SCP")
            .read_timeout(std::time::Duration::from_secs(5));

        // This should succeed in establishing the association despite multiple PDUs
        let mut association = scu_options.establish(server_addr).unwrap();

        // Client should be able to receive the release request that was sent consecutively
        let received_pdu = association.receive().unwrap();
        assert_eq!(received_pdu, echo_pdu);

        // Clean shutdown
        server_handle.join().unwrap();
        drop(association);
    }

    #[cfg(feature = "async")]
    #[tokio::test(flavor = "multi_thread")]
    async fn test_baseline_async() {
        // Immediately _after_ association, the server sends a C-ECHO command
        // This will be received by the client

        // Setup a mock server that will send multiple PDUs consecutively
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = listener.local_addr().unwrap();

        // Create a second PDU (C-ECHO command) to send immediately after
        let echo_pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: 1,
                data: create_c_echo_command(1),
                value_type: PDataValueType::Command,
                is_last: true,
            }],
        };
        let server_pdu = echo_pdu.clone();

        // Spawn server task that sends multiple PDUs back-to-back
        let server_handle = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();

            // Use ServerAssociationOptions to establish the association
            let server_options = ServerAssociationOptions::new()
                .accept_any()
                .with_abstract_syntax(VERIFICATION)
                .ae_title("THIS-SCP");

            let mut association = server_options.establish_async(stream).await.unwrap();

            // Send the second PDU (C-ECHO command) immediately after establishment
            association.send(&server_pdu).await.unwrap();
            association
        });

        // Give server time to start
        tokio::time::sleep(tokio::time::Duration::from_millis(10)).await;

        // Create client and attempt association
        let scu_options = ClientAssociationOptions::new()
            .with_abstract_syntax(VERIFICATION)
            .calling_ae_title("RANDOM")
            .called_ae_title("THIS-SCP")
            .read_timeout(std::time::Duration::from_secs(5));

        // This should succeed in establishing the association despite multiple PDUs
        let mut association = scu_options.establish_async(server_addr).await.unwrap();

        // Client should be able to receive the release request that was sent consecutively
        let received_pdu = association.receive().await.unwrap();
        assert_eq!(received_pdu, echo_pdu);

        // Clean shutdown
        server_handle.await.unwrap();
        drop(association);
    }

    // Tests edge case where the server sends an extra PDU during association
    // client should be able to handle this gracefully.
    #[cfg(feature = "async")]
    #[tokio::test(flavor = "multi_thread")]
    async fn test_association_sends_extra_pdu_async() {
        // During association, the server sends a C-ECHO command
        // This will be received by the client

        // Setup a mock server that will send multiple PDUs consecutively
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = listener.local_addr().unwrap();

        // Create a second PDU (C-ECHO command) to send immediately after
        let echo_pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: 1,
                data: create_c_echo_command(1),
                value_type: PDataValueType::Command,
                is_last: true,
            }],
        };
        let server_pdu = echo_pdu.clone();

        // Spawn server task that sends multiple PDUs back-to-back
        let server_handle = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();

            // Use ServerAssociationOptions to establish the association
            let server_options = ServerAssociationOptions::new()
                .accept_any()
                .with_abstract_syntax(VERIFICATION)
                .ae_title("THIS-SCP");

            let association = server_options
                .establish_with_extra_pdus_async(stream, vec![server_pdu])
                .await
                .unwrap();
            association
        });

        // Give server time to start
        tokio::time::sleep(tokio::time::Duration::from_millis(10)).await;

        // Create client and attempt association
        let scu_options = ClientAssociationOptions::new()
            .with_abstract_syntax(VERIFICATION)
            .calling_ae_title("RANDOM")
            .called_ae_title("THIS-SCP")
            .read_timeout(std::time::Duration::from_secs(5));

        // This should succeed in establishing the association despite multiple PDUs
        let mut association = scu_options.establish_async(server_addr).await.unwrap();

        // Client should be able to receive the release request that was sent consecutively
        let received_pdu = association.receive().await.unwrap();
        assert_eq!(received_pdu, echo_pdu);

        // Clean shutdown
        server_handle.await.unwrap();
        drop(association);
    }

    // Tests edge case where the client sends an extra PDU during association
    // using a broken client implementation that creates a new buffer instead of reusing it
    #[test]
    fn test_client_association_sends_extra_pdu_589_impl() {
        // During association, the client's broken implementation drops extra PDUs
        // This reproduces the behavior that #589 fixed

        // Setup a mock server
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server_addr = listener.local_addr().unwrap();

        // Create a PDU (C-ECHO command) that should be lost
        let echo_pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: 1,
                data: create_c_echo_command(1),
                value_type: PDataValueType::Command,
                is_last: true,
            }],
        };

        // Spawn server thread that sends extra PDUs during association
        let server_handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();

            // Use ServerAssociationOptions with extra PDUs during association
            let server_options = ServerAssociationOptions::new()
                .accept_any()
                .with_abstract_syntax(VERIFICATION)
                .ae_title("THIS-SCP");

            let association = server_options
                .establish_with_extra_pdus(stream, vec![echo_pdu])
                .unwrap();
            association
        });
        // Give server time to start
        std::thread::sleep(std::time::Duration::from_millis(10));

        // Create client and attempt association
        let scu_options = ClientAssociationOptions::new()
            .with_abstract_syntax(VERIFICATION)
            .calling_ae_title("RANDOM")
            .called_ae_title("THIS-SCP")
            .read_timeout(std::time::Duration::from_secs(5));

        // This should succeed in establishing the association despite multiple PDUs
        let mut association = scu_options.broken_establish(server_addr.into()).unwrap();

        // Initiate abort server side
        server_handle.join().unwrap().abort().unwrap();

        // Client should not have anything to receive, only receives abort Rq
        let received_pdu = association.receive().unwrap();
        assert_eq!(
            received_pdu,
            Pdu::AbortRQ {
                source: AbortRQSource::ServiceProvider(
                    AbortRQServiceProviderReason::ReasonNotSpecified
                )
            }
        );

        // Client cannot receive the PDU that was sent during association
        // Clean shutdown
        drop(association);
    }

    #[cfg(feature = "async")]
    #[tokio::test(flavor = "multi_thread")]
    async fn test_client_association_sends_extra_pdu_589_impl_async() {
        // During association, the client's broken implementation drops extra PDUs
        // This reproduces the behavior that #589 fixed

        // Setup a mock server
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = listener.local_addr().unwrap();

        // Create a PDU (C-ECHO command) that should be lost
        let echo_pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: 1,
                data: create_c_echo_command(1),
                value_type: PDataValueType::Command,
                is_last: true,
            }],
        };

        // Spawn server task that sends extra PDUs during association
        let server_handle = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();

            // Use ServerAssociationOptions with extra PDUs during association
            let server_options = ServerAssociationOptions::new()
                .accept_any()
                .with_abstract_syntax(VERIFICATION)
                .ae_title("THIS-SCP");

            let association = server_options
                .establish_with_extra_pdus_async(stream, vec![echo_pdu])
                .await
                .unwrap();
            association
        });

        // Give server time to start
        tokio::time::sleep(tokio::time::Duration::from_millis(10)).await;

        // Create client using broken implementation (creates new buffer)
        let scu_options = ClientAssociationOptions::new()
            .with_abstract_syntax(VERIFICATION)
            .calling_ae_title("RANDOM")
            .called_ae_title("THIS-SCP")
            .read_timeout(std::time::Duration::from_secs(5));

        // Client's broken implementation will miss the extra PDU from server
        let mut association = scu_options
            .broken_establish_async(server_addr.into())
            .await
            .unwrap();
        // Initiate abort server-side
        server_handle.await.unwrap().abort().await.unwrap();

        // Client should be able to receive the release request that was sent consecutively
        let received_pdu = association
            .receive()
            .await
            .expect("Could not receive abort PDU");
        assert_eq!(
            received_pdu,
            Pdu::AbortRQ {
                source: AbortRQSource::ServiceProvider(
                    AbortRQServiceProviderReason::ReasonNotSpecified
                )
            }
        );

        // Client cannot receive the PDU that was sent during association
        // Clean shutdown
        drop(association);
    }
}

mod successive_pdus_during_server_association {
    use super::*;
    use crate::association::server::*;
    use crate::{
        AeAddr, ClientAssociationOptions, Pdu,
        pdu::{PDataValue, PDataValueType},
    };
    use std::net::TcpListener;

    #[test]
    fn test_server_baseline_sync() {
        // Immediately _after_ association, the client sends a C-ECHO command
        // This will be received by the server

        // Setup server listener
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server_addr = listener.local_addr().unwrap();

        // Create a PDU (C-ECHO command) to send immediately after association
        let echo_pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: 1,
                data: create_c_echo_command(1),
                value_type: PDataValueType::Command,
                is_last: true,
            }],
        };
        let client_pdu = echo_pdu.clone();

        // Spawn server thread
        let server_handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();

            // Use ServerAssociationOptions to establish the association
            let server_options = ServerAssociationOptions::new()
                .accept_any()
                .with_abstract_syntax(VERIFICATION)
                .ae_title("THIS-SCP");

            let mut association = server_options.establish(stream).unwrap();

            // Server should be able to receive the PDU sent by client after association
            let received_pdu = association.receive().unwrap();
            assert_eq!(received_pdu, echo_pdu);
            association
        });

        // Give server time to start
        std::thread::sleep(std::time::Duration::from_millis(10));

        // Create client and attempt association, then send PDU immediately after
        let scu_options = ClientAssociationOptions::new()
            .with_abstract_syntax(VERIFICATION)
            .calling_ae_title("RANDOM")
            .called_ae_title("THIS-SCP")
            .read_timeout(std::time::Duration::from_secs(5));

        // Establish association and send PDU immediately after
        let mut association = scu_options.establish(server_addr).unwrap();

        // Send the PDU immediately after establishment
        association.send(&client_pdu).unwrap();

        // Clean shutdown
        server_handle.join().unwrap();
        drop(association);
    }

    #[test]
    fn test_server_association_receives_extra_pdu() {
        // During association, the client sends an extra C-ECHO command
        // Server should be able to handle this gracefully

        // Setup server listener
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server_addr = listener.local_addr().unwrap();

        // Create a PDU (C-ECHO command) to send during association
        let echo_pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: 1,
                data: create_c_echo_command(1),
                value_type: PDataValueType::Command,
                is_last: true,
            }],
        };
        let client_pdu = echo_pdu.clone();

        // Spawn server thread
        let server_handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();

            // Use ServerAssociationOptions to establish the association
            let server_options = ServerAssociationOptions::new()
                .accept_any()
                .with_abstract_syntax(VERIFICATION)
                .ae_title("THIS-SCP");

            let mut association = server_options.establish(stream).unwrap();

            // Server should be able to receive the extra PDU that was sent during association
            let received_pdu = association.receive().unwrap();
            assert_eq!(received_pdu, echo_pdu);
        });

        // Give server time to start
        std::thread::sleep(std::time::Duration::from_millis(10));

        // Create client that sends extra PDU during association
        let scu_options = ClientAssociationOptions::new()
            .with_abstract_syntax(VERIFICATION)
            .calling_ae_title("RANDOM")
            .called_ae_title("THIS-SCP")
            .read_timeout(std::time::Duration::from_secs(5));

        // Use the test method that sends extra PDUs during association
        let association = scu_options
            .establish_with_extra_pdus(AeAddr::new_socket_addr(server_addr), vec![client_pdu])
            .unwrap();

        // Clean shutdown
        drop(association);
        server_handle.join().unwrap();
    }

    #[test]
    fn test_server_association_receives_extra_pdu_589_impl() {
        // Reproduce behavior that #589 introduced
        // During association, the client sends an extra C-ECHO command
        // Server should _not_ be able to handle this gracefully

        // Setup server listener
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server_addr = listener.local_addr().unwrap();

        // Create a PDU (C-ECHO command) to send during association
        let echo_pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: 1,
                data: create_c_echo_command(1),
                value_type: PDataValueType::Command,
                is_last: true,
            }],
        };
        let client_pdu = echo_pdu.clone();

        // Spawn server thread
        let server_handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();

            // Use ServerAssociationOptions to establish the association
            let server_options = ServerAssociationOptions::new()
                .accept_any()
                .with_abstract_syntax(VERIFICATION)
                .ae_title("THIS-SCP");

            let mut association = server_options.broken_establish(stream).unwrap();

            // Server misses the echo request entirely
            let received_pdu = association.receive().unwrap();
            assert_eq!(received_pdu, Pdu::ReleaseRQ);
            association.send(&Pdu::ReleaseRP).unwrap();
        });

        // Give server time to start
        std::thread::sleep(std::time::Duration::from_millis(10));

        // Create client that sends extra PDU during association
        let scu_options = ClientAssociationOptions::new()
            .with_abstract_syntax(VERIFICATION)
            .calling_ae_title("RANDOM")
            .called_ae_title("THIS-SCP")
            .read_timeout(std::time::Duration::from_secs(5));

        // Use the test method that sends extra PDUs during association
        let association = scu_options
            .establish_with_extra_pdus(AeAddr::new_socket_addr(server_addr), vec![client_pdu])
            .unwrap();

        // Clean shutdown. The peer may close its half of the socket before
        // our release request lands, which surfaces as ENOTCONN on macOS;
        // the release semantics have completed in either case.
        let _ = association.release();
        server_handle.join().unwrap();
    }

    #[cfg(feature = "async")]
    #[tokio::test(flavor = "multi_thread")]
    async fn test_server_baseline_async() {
        // Immediately _after_ association, the client sends a C-ECHO command
        // This will be received by the server

        // Setup server listener
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = listener.local_addr().unwrap();

        // Create a PDU (C-ECHO command) to send immediately after association
        let echo_pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: 1,
                data: create_c_echo_command(1),
                value_type: PDataValueType::Command,
                is_last: true,
            }],
        };
        let client_pdu = echo_pdu.clone();

        // Spawn server task
        let server_handle = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();

            // Use ServerAssociationOptions to establish the association
            let server_options = ServerAssociationOptions::new()
                .accept_any()
                .with_abstract_syntax(VERIFICATION)
                .ae_title("THIS-SCP");

            let mut association = server_options.establish_async(stream).await.unwrap();

            // Server should be able to receive the PDU sent by client after association
            let received_pdu = association.receive().await.unwrap();
            assert_eq!(received_pdu, echo_pdu);
        });

        // Give server time to start
        tokio::time::sleep(tokio::time::Duration::from_millis(10)).await;

        // Create client and attempt association, then send PDU immediately after
        let scu_options = ClientAssociationOptions::new()
            .with_abstract_syntax(VERIFICATION)
            .calling_ae_title("RANDOM")
            .called_ae_title("THIS-SCP")
            .read_timeout(std::time::Duration::from_secs(5));

        // Establish association and send PDU immediately after
        let mut association = scu_options.establish_async(server_addr).await.unwrap();

        // Send the PDU immediately after establishment
        association.send(&client_pdu).await.unwrap();

        // Clean shutdown
        drop(association);
        server_handle.await.unwrap();
    }

    #[cfg(feature = "async")]
    #[tokio::test(flavor = "multi_thread")]
    async fn test_server_association_receives_extra_pdu_async() {
        // During association, the client sends an extra C-ECHO command
        // Server should be able to handle this gracefully

        // Setup server listener
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = listener.local_addr().unwrap();

        // Create a PDU (C-ECHO command) to send during association
        let echo_pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: 1,
                data: create_c_echo_command(1),
                value_type: PDataValueType::Command,
                is_last: true,
            }],
        };
        let client_pdu = echo_pdu.clone();

        // Spawn server task
        let server_handle = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();

            // Use ServerAssociationOptions to establish the association
            let server_options = ServerAssociationOptions::new()
                .accept_any()
                .with_abstract_syntax(VERIFICATION)
                .ae_title("THIS-SCP");

            let mut association = server_options.establish_async(stream).await.unwrap();

            // Server should be able to receive the extra PDU that was sent during association
            let received_pdu = association.receive().await.unwrap();
            assert_eq!(received_pdu, echo_pdu);
        });

        // Give server time to start
        tokio::time::sleep(tokio::time::Duration::from_millis(10)).await;

        // Create client that sends extra PDU during association
        let scu_options = ClientAssociationOptions::new()
            .with_abstract_syntax(VERIFICATION)
            .calling_ae_title("RANDOM")
            .called_ae_title("THIS-SCP")
            .read_timeout(std::time::Duration::from_secs(5));

        // Use the test method that sends extra PDUs during association
        let association = scu_options
            .establish_with_extra_pdus_async(AeAddr::new_socket_addr(server_addr), vec![client_pdu])
            .await
            .unwrap();

        // Clean shutdown
        drop(association);
        server_handle.await.unwrap();
    }

    #[cfg(feature = "async")]
    #[tokio::test(flavor = "multi_thread")]
    async fn test_server_association_receives_extra_pdu_589_impl_async() {
        // Reproduce behavior that #589 introduced
        // During association, the client sends an extra C-ECHO command
        // Server should _not_ be able to handle this gracefully

        // Setup server listener
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = listener.local_addr().unwrap();

        // Create a PDU (C-ECHO command) to send during association
        let echo_pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: 1,
                data: create_c_echo_command(1),
                value_type: PDataValueType::Command,
                is_last: true,
            }],
        };
        let client_pdu = echo_pdu.clone();

        // Spawn server task
        let server_handle = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();

            // Use ServerAssociationOptions to establish the association
            let server_options = ServerAssociationOptions::new()
                .accept_any()
                .with_abstract_syntax(VERIFICATION)
                .ae_title("THIS-SCP");

            let mut association = server_options.broken_establish_async(stream).await.unwrap();

            // Server misses the echo request entirely
            let received_pdu = association.receive().await.unwrap();
            assert_eq!(received_pdu, Pdu::ReleaseRQ);
            association.send(&Pdu::ReleaseRP).await.unwrap();
        });

        // Give server time to start
        tokio::time::sleep(tokio::time::Duration::from_millis(10)).await;

        // Create client that sends extra PDU during association
        let scu_options = ClientAssociationOptions::new()
            .with_abstract_syntax(VERIFICATION)
            .calling_ae_title("RANDOM")
            .called_ae_title("THIS-SCP")
            .read_timeout(std::time::Duration::from_secs(5));

        // Use the test method that sends extra PDUs during association
        let association = scu_options
            .establish_with_extra_pdus_async(AeAddr::new_socket_addr(server_addr), vec![client_pdu])
            .await
            .unwrap();

        // Clean shutdown. The peer may close its half of the socket before
        // our release request lands, which surfaces as ENOTCONN on macOS;
        // the release semantics have completed in either case.
        let _ = association.release().await;
        server_handle.await.unwrap();
    }
}

mod close_socket {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    use crate::association::CloseSocket;

    /// Create a connected pair of TCP streams over the loopback interface,
    /// returned as `(client, server)`.
    fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    /// Drop `peer` and wait until `stream` observes the disconnect,
    /// so that the socket is fully torn down before `close` is called.
    fn disconnect_peer(stream: &mut TcpStream, peer: TcpStream) {
        drop(peer);
        let mut buf = [0u8; 1];
        assert_eq!(stream.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn close_tcp_stream() {
        let (mut client, _server) = tcp_pair();
        client.close().unwrap();
    }

    #[test]
    fn close_tcp_stream_twice() {
        let (mut client, _server) = tcp_pair();
        client.close().unwrap();
        // on macOS, shutting down an already shut down socket yields `NotConnected`
        client.close().unwrap();
    }

    #[test]
    fn close_tcp_stream_after_peer_disconnected() {
        let (mut client, server) = tcp_pair();
        disconnect_peer(&mut client, server);
        // on macOS, shutting down a socket after the peer disconnected yields `NotConnected`
        client.close().unwrap();
    }
}

/// `read_pdu_from_wire` / `read_pdu_from_wire_async` take a whole PDU off the read buffer
/// without copying its body: PDUs that arrive in pieces, several PDUs in one read, and a length
/// over the maximum refused from the header alone.
mod take_pdu {
    use super::super::{Error, read_pdu_from_wire};
    use crate::pdu::{MAXIMUM_PDU_SIZE, PDataValue, PDataValueType, Pdu, write_pdu};
    use bytes::BytesMut;
    use std::io::Read;

    /// A reader that hands out at most `step` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn pdata(fill: u8, len: usize) -> Pdu {
        Pdu::PData {
            data: vec![
                PDataValue {
                    presentation_context_id: 1,
                    value_type: PDataValueType::Command,
                    is_last: true,
                    data: vec![fill; 7],
                },
                PDataValue {
                    presentation_context_id: 3,
                    value_type: PDataValueType::Data,
                    is_last: false,
                    data: (0..len).map(|i| (i as u8) ^ fill).collect(),
                },
            ],
        }
    }

    fn wire(pdus: &[Pdu]) -> Vec<u8> {
        let mut out = Vec::new();
        for pdu in pdus {
            write_pdu(&mut out, pdu).unwrap();
        }
        out
    }

    #[test]
    fn pdus_in_pieces_and_back_to_back_come_out_whole_and_in_order() {
        let pdus = vec![
            pdata(0x11, 40_000),
            Pdu::ReleaseRQ,
            pdata(0x22, 3),
            pdata(0x33, 70_000),
            Pdu::AbortRQ {
                source: crate::pdu::AbortRQSource::ServiceUser,
            },
        ];
        let bytes = wire(&pdus);
        for step in [1, 5, 6, 7, 4096, 65_536, bytes.len()] {
            let mut reader = Trickle { data: &bytes, step };
            let mut buf = BytesMut::with_capacity(16_384);
            for want in &pdus {
                let got = read_pdu_from_wire(&mut reader, &mut buf, MAXIMUM_PDU_SIZE, true)
                    .unwrap_or_else(|e| panic!("step {step}: {e}"));
                assert_eq!(&got, want, "step {step}");
            }
            assert!(buf.is_empty(), "step {step}: {} bytes left", buf.len());
        }
    }

    #[cfg(feature = "async")]
    #[tokio::test]
    async fn the_async_reader_takes_the_same_pdus() {
        let pdus = vec![pdata(0x44, 100_000), Pdu::ReleaseRP, pdata(0x55, 1)];
        let bytes = wire(&pdus);
        let mut reader = &bytes[..];
        let mut buf = BytesMut::with_capacity(1024);
        for want in &pdus {
            let got = super::super::read_pdu_from_wire_async(
                &mut reader,
                &mut buf,
                MAXIMUM_PDU_SIZE,
                true,
            )
            .await
            .unwrap();
            assert_eq!(&got, want);
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn a_length_over_the_maximum_is_refused_from_the_header_alone() {
        // the header of a P-DATA-TF declaring 1 MiB, and nothing of its body
        let header = [0x04, 0x00, 0x00, 0x10, 0x00, 0x00];
        let mut reader = Trickle {
            data: &header,
            step: 6,
        };
        let mut buf = BytesMut::new();
        let err = read_pdu_from_wire(&mut reader, &mut buf, 16_384, true).unwrap_err();
        assert!(
            matches!(err, Error::ReceivePdu { .. }),
            "expected the PDU to be refused, got {err:?}"
        );
    }

    #[test]
    fn a_stream_ending_inside_a_pdu_is_a_closed_connection() {
        let bytes = wire(&[pdata(0x66, 5_000)]);
        let mut reader = Trickle {
            data: &bytes[..bytes.len() - 1],
            step: 1000,
        };
        let mut buf = BytesMut::new();
        let err = read_pdu_from_wire(&mut reader, &mut buf, MAXIMUM_PDU_SIZE, true).unwrap_err();
        assert!(
            matches!(err, Error::ConnectionClosed { .. }),
            "expected a closed connection, got {err:?}"
        );
    }
}
